"""The limits in force, as the hot path reads them: which budgets and rate limits apply to a
call, turned into the counters' checks. A snapshot: loaded with the catalog, replaced whole.

What applies to a caller and a model is worked out once and kept (for a minute, and never
past the end of a budget's period): a call only fills in its own amounts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo

from hepai_server.governance.budgets import BudgetRule
from hepai_server.governance.limits import RateRule
from hepai_server.services.accounts import Caller
from hepai_server.state.counters import Check, Kind

WINDOW = 60.0
#: How long a caller's worked-out plan is kept, at most; and how many are kept.
PLAN_LIFE = timedelta(seconds=60)
PLANS_KEPT = 4096


@dataclass(frozen=True, slots=True)
class Meter:
    """What one check of a plan measures, for headers, settlement and alerts."""

    #: "requests", "tokens", "concurrency", "money" or "budget-tokens".
    measure: str
    budget: BudgetRule | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    """The checks one call is admitted against, with what each measures."""

    checks: tuple[Check, ...]
    meters: tuple[Meter, ...]
    budget_ids: tuple[int, ...]
    #: Each budget check's period: its first day (ISO) and end, for seeding and alerts.
    periods: Mapping[int, tuple[str, datetime]] = field(default_factory=dict)
    #: (index, "requests" or "tokens") of the checks the x-ratelimit-* headers tell of.
    rated: tuple[tuple[int, str], ...] = ()

    def actuals(self, *, tokens: int, cost: int) -> list[int]:
        """What each check counts once the call is over."""
        amounts = {"tokens": tokens, "money": cost, "budget-tokens": tokens}
        return [
            amounts.get(meter.measure, check.amount)
            for check, meter in zip(self.checks, self.meters, strict=True)
        ]


@dataclass(frozen=True, slots=True)
class _Template:
    """A plan without its amounts: the checks whose amount is always 1 (requests, concurrency)
    built once, and per other check its index, kind, key, limit, span and measure."""

    fixed: tuple[Check, ...]
    sized: tuple[tuple[int, Kind, str, int, float, str], ...]
    meters: tuple[Meter, ...]
    budget_ids: tuple[int, ...]
    periods: Mapping[int, tuple[str, datetime]]
    valid_until: datetime
    rated: tuple[tuple[int, str], ...]

    @classmethod
    def of(
        cls,
        rows: list[tuple[Kind, str, int, float, str]],
        meters: list[Meter],
        budget_ids: list[int],
        periods: Mapping[int, tuple[str, datetime]],
        valid_until: datetime,
    ) -> _Template:
        fixed = [Check(kind, name, limit, 1, span) for kind, name, limit, span, _ in rows]
        sized = tuple(
            (index, *row)
            for index, row in enumerate(rows)
            if row[4] not in ("requests", "concurrency")
        )
        rated = tuple(
            (index, row[4]) for index, row in enumerate(rows) if row[4] in ("requests", "tokens")
        )
        return cls(
            tuple(fixed), sized, tuple(meters), tuple(budget_ids), periods, valid_until, rated
        )


class Rules:
    """Every budget and rate limit, indexed by whom it is for."""

    def __init__(
        self,
        budgets: Iterable[BudgetRule],
        rates: Iterable[RateRule],
        group_ids: Mapping[str, int],
        *,
        divide: int = 1,
    ) -> None:
        self._budgets = {(b.scope, b.subject_id): b for b in budgets}
        self._rates: dict[tuple[str, int], list[RateRule]] = {}
        for rule in rates:
            self._rates.setdefault((rule.scope, rule.subject_id), []).append(rule)
        self._group_ids = dict(group_ids)
        #: Replicas sharing the limits without shared counters: each enforces its share.
        self._divide = max(divide, 1)
        self.empty = not self._budgets and not self._rates
        self._plans: dict[tuple[int, int, frozenset[str], str], _Template] = {}

    def divided(self, replicas: int) -> Rules:
        """These rules with every limit divided among ``replicas`` (local counters only)."""
        rules = Rules((), (), self._group_ids, divide=replicas)
        rules._budgets, rules._rates, rules.empty = self._budgets, self._rates, self.empty
        return rules

    def budgets(self) -> list[BudgetRule]:
        return list(self._budgets.values())

    def budget_of(self, scope: str, subject_id: int) -> BudgetRule | None:
        return self._budgets.get((scope, subject_id))

    def rates_of(self, scope: str, subject_id: int) -> list[RateRule]:
        """The rate limits set for one subject (on every model or one)."""
        return list(self._rates.get((scope, subject_id), ()))

    def budgets_for(self, caller: Caller) -> list[BudgetRule]:
        """The budgets that count the caller's calls: its user's, its groups', its key's."""
        owners = [("user", caller.user_id)]
        owners += [("group", group) for group in sorted(self.group_ids_of(caller))]
        if caller.key_id:
            owners.append(("key", caller.key_id))
        return [self._budgets[owner] for owner in owners if owner in self._budgets]

    def group_ids_of(self, caller: Caller) -> set[int]:
        return {self._group_ids[g] for g in caller.groups if g in self._group_ids}

    def rates_for(self, caller: Caller) -> list[RateRule]:
        """The rate limits that count the caller's calls (on some model or all)."""
        groups = sorted(self.group_ids_of(caller))
        found = [
            rule
            for scope, subject, _counted in self._rate_subjects(caller, groups)
            for rule in self._rates.get((scope, subject), ())
        ]
        return found + list(self._rates.get(("model", 0), ()))

    def plan(
        self,
        caller: Caller,
        model: str,
        *,
        tokens: int,
        cost: int,
        now: datetime,
        zone: tzinfo,
        reservation_ttl: float,
    ) -> Plan:
        """The checks a call of ``model`` by ``caller`` is admitted against, reserving
        ``tokens`` and ``cost`` (estimates) where they are counted."""
        key = (caller.key_id, caller.user_id, caller.groups, model)
        template = self._plans.get(key)
        if template is None or now >= template.valid_until:
            if len(self._plans) >= PLANS_KEPT:
                self._plans.clear()
            template = self._plans[key] = self._template(
                caller, model, now=now, zone=zone, reservation_ttl=reservation_ttl
            )
        checks = list(template.fixed)
        for index, kind, name, limit, span, measure in template.sized:
            checks[index] = Check(kind, name, limit, cost if measure == "money" else tokens, span)
        return Plan(
            tuple(checks), template.meters, template.budget_ids, template.periods, template.rated
        )

    def _template(
        self, caller: Caller, model: str, *, now: datetime, zone: tzinfo, reservation_ttl: float
    ) -> _Template:
        rows: list[tuple[Kind, str, int, float, str]] = []
        meters: list[Meter] = []
        groups = [self._group_ids[g] for g in sorted(caller.groups) if g in self._group_ids]
        for scope, subject, counted_as in self._rate_subjects(caller, groups):
            for rule in self._rates.get((scope, subject), ()):
                if rule.model in ("", model):
                    self._add_rates(rows, meters, rule, counted_as)
        for rule in self._rates.get(("model", 0), ()):
            if rule.model == model:
                self._add_rates(rows, meters, rule, "model:0")
        budget_ids: list[int] = []
        periods: dict[int, tuple[str, datetime]] = {}
        valid_until = now + PLAN_LIFE
        owners = [("user", caller.user_id), *(("group", g) for g in groups)]
        if caller.key_id:
            owners.append(("key", caller.key_id))
        for owner in owners:
            budget = self._budgets.get(owner)
            if budget is None:
                continue
            start, end = budget.window(now, zone)
            valid_until = min(valid_until, end)
            span = max((end - now).total_seconds(), reservation_ttl)
            key = f"hepai:budget:{budget.id}:{start.isoformat()}"
            budget_ids.append(budget.id)
            periods[budget.id] = (start.isoformat(), end)
            if budget.amount_nanos is not None:
                rows.append(("budget", key + ":m", budget.amount_nanos, span, "money"))
                meters.append(Meter("money", budget))
            if budget.tokens is not None:
                rows.append(("budget", key + ":t", budget.tokens, span, "budget-tokens"))
                meters.append(Meter("budget-tokens", budget))
        return _Template.of(rows, meters, budget_ids, periods, valid_until)

    def _rate_subjects(self, caller: Caller, groups: Sequence[int]) -> list[tuple[str, int, str]]:
        """(scope, subject id of the rules, what the counters count per)."""
        subjects = []
        if caller.key_id:
            subjects.append(("key", caller.key_id, f"key:{caller.key_id}"))
        own = ("user", caller.user_id) in self._rates
        subjects.append(("user", caller.user_id if own else 0, f"user:{caller.user_id}"))
        subjects += [("group", g, f"group:{g}") for g in groups]
        return subjects

    def _add_rates(
        self,
        rows: list[tuple[Kind, str, int, float, str]],
        meters: list[Meter],
        rule: RateRule,
        counted: str,
    ) -> None:
        base = f"hepai:rl:{counted}:{rule.model}"
        divide = self._divide
        if rule.rpm is not None:
            rows.append(("window", base + ":rpm", rule.rpm // divide, WINDOW, "requests"))
            meters.append(Meter("requests"))
        if rule.tpm is not None:
            rows.append(("window", base + ":tpm", rule.tpm // divide, WINDOW, "tokens"))
            meters.append(Meter("tokens"))
        if rule.concurrency is not None:
            limit = max(rule.concurrency // divide, 1)
            rows.append(("concurrency", base + ":conc", limit, 0.0, "concurrency"))
            meters.append(Meter("concurrency"))
