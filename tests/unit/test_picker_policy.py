"""The endpoint picker's rule, on scheduler statuses built by hand."""

from collections import Counter

from multai.common.v1 import common_pb2
from multai.scheduler.v1 import scheduler_pb2 as pb
from picker.policy import BACKGROUND, NORMAL, URGENT, NodeView, NoEndpoint, PickRules, Route, Shed, choose

MB = 1_000_000
RULES = PickRules(busy_window_seconds=30, shed_background_waiting=4, shed_normal_waiting=8, max_fallbacks=2)
CATALOG = [
    pb.ModelFootprint(model="small", size_bytes=300 * MB, slots=4, aliases=["tiny"]),
    pb.ModelFootprint(model="large", size_bytes=400 * MB, slots=4),
]


def node(
    endpoint: str,
    resident: dict[str, tuple[int, float]] | None = None,
    waiting: list[str] | None = None,
    budget: int = 500 * MB,
    pending: Counter[str] | None = None,
    last_picked: float = 0.0,
) -> NodeView:
    """A node with `resident` {model: (slots in use, idle seconds)} and `waiting` requests, by model."""
    sizes = {footprint.model: footprint.size_bytes for footprint in CATALOG}
    resident = resident or {}
    status = pb.GetStatusResponse(
        services=[pb.ServiceStatus(service="chat", models=CATALOG)],
        resident_models=[
            pb.ResidentModelStatus(
                model=model,
                device=common_pb2.DEVICE_CPU,
                size_bytes=sizes[model],
                slots=4,
                slots_in_use=in_use,
                idle_seconds=0.0 if in_use else idle,
            )
            for model, (in_use, idle) in resident.items()
        ],
        queue=[pb.WaiterStatus(model=model, level=1) for model in waiting or []],
        leases=[pb.LeaseStatus(model=m) for m, (in_use, _) in resident.items() for _ in range(in_use)],
        devices=[
            pb.DeviceStatus(
                device=common_pb2.DEVICE_CPU,
                budget_bytes=budget,
                used_bytes=sum(sizes[model] for model in resident),
            )
        ],
    )
    return NodeView(endpoint, status, 0.0, pending or Counter(), last_picked)


def route(decision: object) -> Route:
    assert isinstance(decision, Route), decision
    return decision


def test_a_resident_model_with_a_free_slot_wins_over_an_empty_node() -> None:
    nodes = [node("10.0.0.1:8080"), node("10.0.0.2:8080", {"large": (1, 0)})]
    decision = route(choose(nodes, "large", NORMAL, RULES))
    assert decision.endpoints[0] == "10.0.0.2:8080"
    assert decision.tier == 0
    # The other node is the fallback, for a retry.
    assert decision.endpoints == ["10.0.0.2:8080", "10.0.0.1:8080"]


def test_aliases_mean_their_model() -> None:
    nodes = [node("a:1"), node("b:1", {"small": (0, 5)})]
    decision = route(choose(nodes, "tiny", NORMAL, RULES))
    assert (decision.endpoints[0], decision.model) == ("b:1", "small")


def test_a_node_that_must_evict_a_busy_model_loses_to_one_that_has_room() -> None:
    # Node a holds `small`, used a second ago: loading `large` there (500 MB budget) would evict it.
    nodes = [node("a:1", {"small": (0, 1)}), node("b:1", budget=1000 * MB)]
    decision = route(choose(nodes, "large", NORMAL, RULES))
    assert (decision.endpoints[0], decision.tier) == ("b:1", 1)


def test_evicting_an_idle_model_counts_as_room() -> None:
    # Idle for longer than the busy window: replacing it is fine, and a node is as good as an empty one.
    nodes = [node("a:1", {"small": (0, 120)}), node("b:1", {"small": (2, 0)})]
    decision = route(choose(nodes, "large", NORMAL, RULES))
    assert (decision.endpoints[0], decision.tier) == ("a:1", 1)


def test_alternating_models_stay_on_their_nodes() -> None:
    nodes = [node("a:1", {"small": (0, 0.5)}), node("b:1", {"large": (0, 0.5)})]
    for model, endpoint in [("small", "a:1"), ("large", "b:1")] * 3:
        assert route(choose(nodes, model, NORMAL, RULES)).endpoints[0] == endpoint


def test_without_room_anywhere_the_least_loaded_node_serves_and_the_resident_one_breaks_ties() -> None:
    full = {"small": (4, 0)}
    # Equal load elsewhere: b holds the model, so it queues there instead of evicting on a.
    nodes = [node("a:1", {"large": (4, 0)}), node("b:1", full)]
    decision = route(choose(nodes, "small", NORMAL, RULES))
    assert (decision.endpoints[0], decision.tier) == ("b:1", 2)
    # More load on b: the request goes where fewer requests are.
    nodes = [node("a:1", {"large": (4, 0)}), node("b:1", full, waiting=["small", "small"])]
    assert route(choose(nodes, "small", NORMAL, RULES)).endpoints[0] == "a:1"


def test_ties_go_to_the_shortest_queue_then_to_the_node_picked_least_recently() -> None:
    nodes = [
        node("a:1", {"small": (1, 0)}, waiting=["large"]),
        node("b:1", {"small": (1, 0)}),
    ]
    assert route(choose(nodes, "small", NORMAL, RULES)).endpoints[0] == "b:1"
    nodes = [node("a:1", {"small": (1, 0)}, last_picked=5.0), node("b:1", {"small": (1, 0)}, last_picked=9.0)]
    assert route(choose(nodes, "small", NORMAL, RULES)).endpoints[0] == "a:1"


def test_requests_just_sent_count_before_the_status_shows_them() -> None:
    # Three picks not yet in a's status fill its slots with the one in use: the next goes elsewhere.
    nodes = [node("a:1", {"small": (1, 0)}, pending=Counter(small=3)), node("b:1", budget=1000 * MB)]
    assert route(choose(nodes, "small", NORMAL, RULES)).endpoints[0] == "b:1"
    # A model just sent to an empty node is as good as resident there.
    nodes = [node("a:1", pending=Counter(large=1)), node("b:1")]
    decision = route(choose(nodes, "large", NORMAL, RULES))
    assert (decision.endpoints[0], decision.tier) == ("a:1", 0)


def test_background_requests_are_shed_first_and_urgent_ones_never() -> None:
    nodes = [node("a:1", {"small": (4, 0)}, waiting=["small"] * 5), node("b:1", waiting=["large"] * 6)]
    shed = choose(nodes, "small", BACKGROUND, RULES)
    assert isinstance(shed, Shed) and shed.waiting == 5
    assert isinstance(choose(nodes, "small", NORMAL, RULES), Route)
    nodes = [node("a:1", waiting=["small"] * 9), node("b:1", waiting=["small"] * 12)]
    assert isinstance(choose(nodes, "small", NORMAL, RULES), Shed)
    assert isinstance(choose(nodes, "small", URGENT, RULES), Route)


def test_no_ready_node_or_none_in_the_subset_is_no_endpoint() -> None:
    assert isinstance(choose([], "small", NORMAL, RULES), NoEndpoint)
    nodes = [node("a:1"), node("b:1")]
    assert isinstance(choose(nodes, "small", NORMAL, RULES, subset=["c:1"]), NoEndpoint)
    assert route(choose(nodes, "small", NORMAL, RULES, subset=["b:1"])).endpoints == ["b:1"]


def test_a_model_no_node_knows_and_a_request_for_no_model_still_go_somewhere() -> None:
    nodes = [node("a:1", waiting=["small"]), node("b:1")]
    # The bridge there answers 404 for the unknown model, in OpenAI's words; GET /v1/models has no model.
    assert route(choose(nodes, "gpt-5", NORMAL, RULES)).endpoints[0] == "b:1"
    assert route(choose(nodes, None, NORMAL, RULES)).endpoints[0] == "b:1"
