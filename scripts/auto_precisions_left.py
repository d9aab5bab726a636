"""Print the answers of models.precision=auto that this CPU does not give by itself, one per line.

`make test` runs the whole suite with auto as this CPU answers it, then the tests marked `models` once
more for each answer printed here (fp32 always counts; bf16 only where oneDNN has bf16 kernels), so
that both answers are tested on any CPU that can run them.
"""

import torch

from worker.inspection.models.precision import cpu_has_bf16_kernels, resolve_precision

if __name__ == "__main__":
    own = resolve_precision("auto", torch.device("cpu"))
    possible = ["fp32", "bf16"] if cpu_has_bf16_kernels() else ["fp32"]
    print("\n".join(answer for answer in possible if answer != own))
