"""Whether the Hugging Face Hub can be reached, and the one error memmix raises when it cannot.

Data loading (`memmix_data`), model loading for evaluation (`evaluation.loading`) and pushing an export
(`memmix_train.export`) all fail the same way when the Hub is switched off or out of reach: a
`HubUnreachableError` (a `ConnectionError`) whose message says what could not be done and the way out.
Offline mode is read from the environment at call time (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``, plus
``HF_DATASETS_OFFLINE`` for datasets), so a test or a user can switch it on after the libraries were imported.

Only the standard library is imported here; every check runs without touching the network::

    from memmix_hub import HubUnreachableError, check_hub_reachable, hub_is_offline, looks_like_hub_id
"""

from __future__ import annotations

import os
import re

OFFLINE_ENV_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
# `datasets` also honours its own switch; a Hub dataset is offline when any of these is set
DATASETS_OFFLINE_ENV_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
_TRUE_VALUES = {"1", "ON", "YES", "TRUE"}
# exception class names (anywhere in the MRO) that huggingface_hub, requests, httpx and datasets use for
# "no connection"; matched by name so that none of those libraries has to be imported here
_CONNECTION_ERROR_NAMES = {"ConnectionError", "ConnectError", "OfflineModeIsEnabled", "Timeout", "TimeoutException"}
_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")


class HubUnreachableError(ConnectionError):
    """The Hugging Face Hub cannot be reached (offline mode is set, or no network)."""


def offline_switches(env_vars: tuple[str, ...] = OFFLINE_ENV_VARS) -> list[str]:
    """The environment variables of `env_vars` that switch the Hub off (``1``, ``ON``, ``YES``, ``TRUE``)."""
    return [name for name in env_vars if os.environ.get(name, "").strip().upper() in _TRUE_VALUES]


def hub_is_offline(env_vars: tuple[str, ...] = OFFLINE_ENV_VARS) -> bool:
    """True when the environment switches the Hub off (pass `DATASETS_OFFLINE_ENV_VARS` for datasets)."""
    return bool(offline_switches(env_vars))


def looks_like_hub_id(name: str) -> bool:
    """True for ``owner/name`` strings that are not local paths (what ``from_pretrained`` fetches from the Hub)."""
    return not os.path.exists(name) and _HUB_ID.fullmatch(name) is not None


def is_connection_error(error: BaseException) -> bool:
    """True when `error` means "no connection to the Hub" (by class name or an offline/connect message)."""
    names = {cls.__name__ for cls in type(error).__mro__}
    text = str(error).lower()
    return bool(names & _CONNECTION_ERROR_NAMES) or "offline" in text or "couldn't connect" in text


def hub_unreachable(subject: str, reason: str, advice: str) -> HubUnreachableError:
    """The error for `subject` (e.g. ``"Cannot load the Hub dataset 'org/name'"``) failing because the Hub
    cannot be reached for `reason`, with `advice` saying the way out."""
    return HubUnreachableError(f"{subject}: the Hugging Face Hub cannot be reached ({reason}). {advice}")


def check_hub_reachable(
    repo_id: str, folder: str | os.PathLike | None = None, advice: str | None = None
) -> None:
    """Fail early, with the way out, when pushing `folder` to `repo_id` is impossible because the Hub is off.

    Raises `HubUnreachableError` whose message says ``offline mode is on`` and, with `folder`, that the
    folder is kept; `advice` replaces the default way out (``hf upload REPO FOLDER`` later).
    """
    switches = offline_switches()
    if not switches:
        return
    kept = f" The exported folder {folder} is kept;" if folder else ""
    way_out = advice or f"upload it later with `hf upload {repo_id} {folder or '<folder>'}`."
    raise HubUnreachableError(
        f"Cannot push to the Hugging Face Hub repo {repo_id!r}: offline mode is on "
        f"({', '.join(f'{name}=1' for name in switches)}).{kept} {way_out}"
    )


__all__ = [
    "DATASETS_OFFLINE_ENV_VARS",
    "OFFLINE_ENV_VARS",
    "HubUnreachableError",
    "check_hub_reachable",
    "hub_is_offline",
    "hub_unreachable",
    "is_connection_error",
    "looks_like_hub_id",
    "offline_switches",
]
