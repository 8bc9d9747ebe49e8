"""memmix's contact with the Hugging Face Hub, shared by data loading, training export and evaluation.

- `memmix_hub.hub`: `HubUnreachableError` (the one error for "the Hub cannot be reached"), `hub_is_offline`,
  `looks_like_hub_id`, `check_hub_reachable` (before a push), `is_connection_error`, `hub_unreachable`.
- `memmix_hub.model_card`: the model-card writer (huggingface_hub `ModelCard`): `new_model_card` for a fresh
  export, `merge_into_card` to put a report's numbers into an existing card, `eval_results`,
  `dataset_identity`.

Neither `memmix_train` nor `evaluation` is imported here, so both can import this package.
"""

from .hub import (
    DATASETS_OFFLINE_ENV_VARS,
    OFFLINE_ENV_VARS,
    HubUnreachableError,
    check_hub_reachable,
    hub_is_offline,
    hub_unreachable,
    is_connection_error,
    looks_like_hub_id,
    offline_switches,
)
from .model_card import (
    BUILTIN_DATASET_NAME,
    FixedDecimals,
    dataset_identity,
    eval_results,
    merge_into_card,
    merge_results,
    new_model_card,
    same_result,
)

__all__ = [
    "BUILTIN_DATASET_NAME",
    "DATASETS_OFFLINE_ENV_VARS",
    "OFFLINE_ENV_VARS",
    "FixedDecimals",
    "HubUnreachableError",
    "check_hub_reachable",
    "dataset_identity",
    "eval_results",
    "hub_is_offline",
    "hub_unreachable",
    "is_connection_error",
    "looks_like_hub_id",
    "merge_into_card",
    "merge_results",
    "new_model_card",
    "offline_switches",
    "same_result",
]
