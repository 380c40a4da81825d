"""The batch worker's concurrency rule, against scheduler states."""

from multai.scheduler.v1 import scheduler_pb2
from rest_bridge.batch_worker import lines_allowed

MODEL = "smollm2-135m-instruct"
OURS = {"batch_req_1", "batch_req_2"}


def status(slots: int, leases: list[str], queue: tuple[str, ...] = ()) -> scheduler_pb2.GetStatusResponse:
    return scheduler_pb2.GetStatusResponse(
        resident_models=[
            scheduler_pb2.ResidentModelStatus(model=MODEL, slots=slots, slots_in_use=len(leases))
        ],
        leases=[scheduler_pb2.LeaseStatus(request_id=rid, model=MODEL) for rid in leases],
        queue=[scheduler_pb2.WaiterStatus(request_id=rid, model=MODEL, level=0) for rid in queue],
    )


def test_the_batch_fills_the_slots_but_one() -> None:
    assert lines_allowed(status(4, ["batch_req_1"]), MODEL, OURS) == 3
    assert lines_allowed(status(4, ["batch_req_1", "req_interactive"]), MODEL, OURS) == 2


def test_one_line_at_a_time_with_one_slot_or_an_unknown_model() -> None:
    assert lines_allowed(status(1, []), MODEL, OURS) == 1
    assert lines_allowed(status(4, []), "not-resident", OURS) == 1
    assert lines_allowed(None, MODEL, OURS) == 1


def test_nothing_starts_while_anyone_else_waits() -> None:
    assert lines_allowed(status(4, ["batch_req_1"], queue=("req_urgent",)), MODEL, OURS) == 0
    assert lines_allowed(status(4, [], queue=("batch_req_2",)), MODEL, OURS) == 3
