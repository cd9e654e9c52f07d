"""What the SDK raises when a gateway child cannot be started or supervised."""

from __future__ import annotations


class GatewayError(Exception):
    """The gateway child could not be started or supervised."""


class GatewayConfigError(GatewayError):
    """The child refused its routing table (exit 1); `problems` are its `FILE:LINE:COL` lines.

    A refusal that has no such line (a setting that may not start) gives the child's own words.
    """

    def __init__(self, problems: list[str], output_tail: str) -> None:
        self.problems = problems
        self.output_tail = output_tail
        super().__init__("mini-llm: invalid routing table:\n" + "\n".join(problems))


class GatewayStartError(GatewayError):
    """The child exited before listening or was not healthy in time; `output_tail` says why.

    `returncode` tells the causes apart (see mini_llm.contract): 3 for a port that cannot be
    bound, 4 for an internal error, None when it did not come up in time.
    """

    def __init__(self, reason: str, output_tail: str, returncode: int | None = None) -> None:
        self.reason = reason
        self.output_tail = output_tail
        self.returncode = returncode
        shown = f"\n--- last output of mini-llm serve ---\n{output_tail}" if output_tail else ""
        super().__init__(f"mini-llm: {reason}{shown}")
