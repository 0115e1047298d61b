"""Models: ``forward(dense (B, D), sparse (B, F))`` ->

* ranking models (DeepFM, WideAndDeep, DCNv2, DLRM): logits ``(B,)``, or ``(B, num_outputs)`` when the loss asks
  for more;
* multi-task models (MMoE, PLE, ESMM): one tower per task, ``(B, sum(task_outputs))``;
* two-tower retrieval models (DSSM): ``(B, 2, D)`` user and item embeddings.
"""

from easyrec.models.dcnv2 import DCNv2
from easyrec.models.deepfm import DeepFM
from easyrec.models.dlrm import DLRM
from easyrec.models.dssm import DSSM
from easyrec.models.esmm import ESMM
from easyrec.models.mmoe import MMoE
from easyrec.models.ple import PLE
from easyrec.models.wide_deep import WideAndDeep

__all__ = ["DeepFM", "WideAndDeep", "DCNv2", "DLRM", "MMoE", "PLE", "ESMM", "DSSM"]
