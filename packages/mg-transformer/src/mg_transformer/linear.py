"""`Linear`: `mint.nn.Linear` computed as one 2-D transposing matmul.

On CPU (MindSpore 2.10, synchronous launch) `mint.nn.Linear`'s kernel reaches ~165-180 GFLOP/s at the
transformer's shapes (2048 tokens x 512 -> 512 / 1536) while `ops.MatMul(transpose_b=True)` on the same operands
flattened to 2-D reaches ~245-275 (issue 23). Being a subclass with the same `weight` / `bias` parameters, it
stays a `mint.nn.Linear` for tensor-parallel styles and checkpoints.
"""

from __future__ import annotations

from mindspore import Tensor, mint, ops

_MATMUL_NT = ops.MatMul(transpose_b=True)  # x @ weight^T with weight in PyTorch's (out, in) layout


class Linear(mint.nn.Linear):
    """y = x @ weight^T (+ bias) over the last axis of x, any leading shape."""

    def construct(self, x: Tensor) -> Tensor:
        y = _MATMUL_NT(x.reshape(-1, x.shape[-1]), self.weight)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape((*x.shape[:-1], y.shape[-1]))
