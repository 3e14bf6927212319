"""Skills (think.md §3 `get_skills`): instructions the model loads only when a task needs them.

The system prompt lists each skill by name and description; `activate_skill` returns a
skill's instructions as its tool result (that is how they enter the model's context) and
`read_skill_resource` one of its resource files. The reference's `run_skill_script` is not
offered: the only sandbox here runs JavaScript extensions and code-mode snippets over our own
tools, not a skill's scripts.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import pydantic

from agents_app.agents.tools import Tool


@dataclass(frozen=True)
class Skill:
    """One skill: `instructions` are what activating it loads; `resources` are further
    documents by path (templates, reference tables) the model reads on demand."""

    name: str
    description: str
    instructions: str
    resources: Mapping[str, str] = field(default_factory=dict)


def render(skills: Sequence[Skill]) -> str:
    """The system-prompt section naming the available skills; empty without skills."""
    if not skills:
        return ""
    lines = "\n".join(f"- {skill.name}: {skill.description}" for skill in skills)
    return f"Skills available (call activate_skill with a name to load its instructions before using it):\n{lines}"


def tools(skills: Sequence[Skill]) -> dict[str, Tool]:
    if not skills:
        return {}
    by_name = {skill.name: skill for skill in skills}
    names = Literal[tuple(by_name)]  # type: ignore[valid-type]
    ActivateSkill = pydantic.create_model("ActivateSkill", name=(names, ...))
    ReadSkillResource = pydantic.create_model("ReadSkillResource", name=(names, ...), path=(str, ...))

    async def activate_skill(name: str) -> str:
        skill = by_name[name]
        if not skill.resources:
            return skill.instructions
        return f"{skill.instructions}\n\nResources (read_skill_resource): {', '.join(skill.resources)}"

    async def read_skill_resource(name: str, path: str) -> str:
        content = by_name[name].resources.get(path)
        return content if content is not None else f"Not found: {path}. Resources of {name}: {', '.join(by_name[name].resources) or 'none'}"

    return {
        "activate_skill": Tool("activate_skill", "Load the instructions of one of the skills listed in your system prompt.", ActivateSkill, activate_skill),
        "read_skill_resource": Tool("read_skill_resource", "Read a resource file of a skill you activated.", ReadSkillResource, read_skill_resource),
    }
