"""Prompts are data: WinCLIP's compositional ensemble, the paper's extra states, and the localising prompts.

The prompt-set version is a hash of all of it, so a result says exactly which
prompts produced it and cache entries of an old prompt set are never reused.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

# WinCLIP (Jeong et al., CVPR 2023) template list.
TEMPLATES: tuple[str, ...] = (
    "a cropped photo of the {}.",
    "a cropped photo of a {}.",
    "a close-up photo of a {}.",
    "a close-up photo of the {}.",
    "a bright photo of a {}.",
    "a bright photo of the {}.",
    "a dark photo of the {}.",
    "a dark photo of a {}.",
    "a jpeg corrupted photo of a {}.",
    "a jpeg corrupted photo of the {}.",
    "a blurry photo of the {}.",
    "a blurry photo of a {}.",
    "a photo of a {}.",
    "a photo of the {}.",
    "a photo of a small {}.",
    "a photo of the small {}.",
    "a photo of a large {}.",
    "a photo of the large {}.",
    "a photo of the {} for visual inspection.",
    "a photo of a {} for visual inspection.",
    "a photo of the {} for anomaly detection.",
    "a photo of a {} for anomaly detection.",
)

# WinCLIP's state words, then the paper's additions (appendix, Fig. 2 a and b).
NORMAL_STATES: tuple[str, ...] = (
    "{}",
    "flawless {}",
    "perfect {}",
    "unblemished {}",
    "{} without flaw",
    "{} without defect",
    "{} without damage",
    "good {}",
    "normal {}",
    "amazing {}",
    "pristine {}",
    "undamaged {}",
    "{} in good condition",
    "unbroken {}",
    "{} without any imperfections",
    "{} without any scratches",
    "{} without any marks",
    "complete {}",
    "new {}",
)
ANOMALOUS_STATES: tuple[str, ...] = (
    "damaged {}",
    "{} with flaw",
    "{} with defect",
    "{} with damage",
    "broken {}",
    "bad {}",
    "flawed {}",
    "defective {}",
    "{} in poor condition",
    "worn {}",
    "{} with scratches",
    "{} with marks",
    "{} with imperfections",
    "cracked {}",
    "faulty {}",
    "incomplete {}",
    "bent {}",
    "snapped {}",
    "scratched {}",
    "shattered {}",
    "fractured {}",
    "burst {}",
    "{} in pieces",
)

# Generic nouns for a defective region (paper, Fig. 2 c). The paper lists "an error" twice;
# a duplicate would only double its weight in the harmonic mean, so it appears once.
LOCALISING_PROMPTS: tuple[str, ...] = (
    "a tear",
    "a rip",
    "some damage",
    "a fault",
    "a break",
    "an abnormality",
    "a defect",
    "a crack",
    "an anomaly",
    "a missing component",
    "an error",
    "a mark",
    "a cut",
    "a dent",
    "a scratch",
    "an imperfection",
    "a blemish",
    "a mistake",
)


def _state(state: str, object_name: str) -> str:
    # replace() rather than format(): an operator's state may contain other braces
    return state.replace("{}", object_name)


@dataclass(frozen=True)
class PromptSet:
    templates: tuple[str, ...] = TEMPLATES
    normal_states: tuple[str, ...] = NORMAL_STATES
    anomalous_states: tuple[str, ...] = ANOMALOUS_STATES
    localising: tuple[str, ...] = LOCALISING_PROMPTS

    def state_prompts(
        self, object_name: str, extra_normal: tuple[str, ...] = (), extra_anomalous: tuple[str, ...] = ()
    ) -> tuple[list[str], list[str]]:
        """Every template x state combination for one object: (normal prompts, anomalous prompts).

        `extra_normal` / `extra_anomalous` (a control record's prompt overrides) join the ensemble;
        like the built-in states they may hold `{}` for the object name (else they are used as written).
        """

        def compose(states: tuple[str, ...]) -> list[str]:
            return [template.format(_state(state, object_name)) for state in states for template in self.templates]

        normal, anomalous = self.normal_states + tuple(extra_normal), self.anomalous_states + tuple(extra_anomalous)
        return compose(normal), compose(anomalous)

    @property
    def version(self) -> str:
        """Stable short hash of the whole prompt set."""
        payload = json.dumps(
            [self.templates, self.normal_states, self.anomalous_states, self.localising], separators=(",", ":")
        )
        return "ps-" + hashlib.sha256(payload.encode()).hexdigest()[:12]


DEFAULT_PROMPTS = PromptSet()
