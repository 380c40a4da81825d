"""The engines' default thread count follows the CPUs the process may use, not the machine's."""

import os
import subprocess
import sys

from tests.e2e.mesh import PROJECT_ROOT


def test_a_process_pinned_to_one_cpu_defaults_to_one_engine_thread() -> None:
    # A cpuset (taskset, Kubernetes' static CPU manager) narrows the CPUs; llama.cpp with more threads than
    # CPUs makes its threads wait for each other.
    one_cpu = min(os.sched_getaffinity(0))
    printed = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import os; os.sched_setaffinity(0, {{{one_cpu}}}); "
            "from services.chat.config import ChatSettings; from services.audio.config import AudioSettings; "
            "print(ChatSettings().n_threads, AudioSettings().cpu_threads)",
        ],
        cwd=PROJECT_ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("MULTAI_")},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert printed == ["1", "1"]
