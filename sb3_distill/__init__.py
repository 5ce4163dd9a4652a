"""Policy distillation for Stable-Baselines3: distil a large teacher policy into a small student."""

from sb3_distill.datafree import DataFreeDistillation, distill_datafree
from sb3_distill.distiller import DistillConfig, Distiller
from sb3_distill.export import export
from sb3_distill.finetune import FineTunePPO, to_dqn, to_ppo
from sb3_distill.normalization import wrap_env
from sb3_distill.offline import OfflineDistillation, distill
from sb3_distill.outputs import count_acting_parameters
from sb3_distill.ppd import ProximalPolicyDistillation
from sb3_distill.realtime import RealTimeDistillCallback
from sb3_distill.student_files import load_student, save_student
from sb3_distill.students import ModuleStudent, ladder
from sb3_distill.teachers import Teacher, load_teacher
from sb3_distill.version import __version__

__all__ = [
    "DataFreeDistillation",
    "DistillConfig",
    "Distiller",
    "FineTunePPO",
    "ModuleStudent",
    "OfflineDistillation",
    "ProximalPolicyDistillation",
    "RealTimeDistillCallback",
    "Teacher",
    "__version__",
    "count_acting_parameters",
    "distill",
    "distill_datafree",
    "export",
    "ladder",
    "load_student",
    "load_teacher",
    "save_student",
    "to_dqn",
    "to_ppo",
    "wrap_env",
]
