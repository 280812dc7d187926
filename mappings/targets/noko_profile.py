"""The `[noko]` section of the mapping profile: settings only the Noko planner and target use.

None today: what Noko shows of the reference, the projects and the issuing company is the
ledger's (`[ledger]`), whichever accounting system it goes to. A profile written before
`[ledger]` existed holds those keys here, and `mappings.profile` still reads them from here;
every other key of `[noko]` is refused by name when the profile is loaded.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from mappings.profile import Profile


class NokoSettings(BaseModel):
    """What the Noko planner needs from the operator beyond the ledger document."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def from_profile(cls, profile: Profile) -> NokoSettings:
        """The profile's `[noko]` section; `ProfileError` naming the line and key at fault."""
        return profile.target_settings("noko", cls)
