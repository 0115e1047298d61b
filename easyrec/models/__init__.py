"""Models: ``forward(dense (B, D), sparse (B, F))``, or ``forward(dense, sparse, lists (B, ΣL))`` when the data has
multi-value or sequence features (see :class:`~easyrec.data.features.InputSpec`) ->

* ranking models (DeepFM, WideAndDeep, DCNv2, DLRM, DIN): logits ``(B,)``, or ``(B, num_outputs)`` when the loss asks
  for more;
* multi-task models (MMoE, PLE, ESMM): one tower per task, ``(B, sum(task_outputs))``;
* two-tower retrieval models (DSSM): ``(B, 2, D)`` user and item embeddings.
"""

from easyrec.models.dcnv2 import DCNv2
from easyrec.models.deepfm import DeepFM
from easyrec.models.din import DIN
from easyrec.models.dlrm import DLRM
from easyrec.models.dssm import DSSM
from easyrec.models.esmm import ESMM
from easyrec.models.mmoe import MMoE
from easyrec.models.ple import PLE
from easyrec.models.wide_deep import WideAndDeep

__all__ = ["DeepFM", "WideAndDeep", "DCNv2", "DLRM", "DIN", "MMoE", "PLE", "ESMM", "DSSM"]
