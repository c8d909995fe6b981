"""The `among` lookup: `field__among=RawSQL(ids subquery)`, for the scoping subqueries of
visible_to (envs.models.EnvQuerySet.ids_of).

A plain `field IN (subquery)` is what SQLite gets. PostgreSQL gets `field = ANY(ARRAY(subquery))`:
the subquery then runs once, as an InitPlan, and the outer rows are read through their index on
`field`. With IN, PostgreSQL 15 planned a hash semi-join over a sequential scan of every VM (1.5 ms
at 10,000 VMs, growing with the table; 0.2 ms with ANY; bench/list_latency.py, EXPLAIN ANALYZE)."""

from __future__ import annotations

from django.db.models import Field, ForeignObject, Lookup
from django.db.models.expressions import RawSQL


class Among(Lookup):
    lookup_name = "among"
    prepare_rhs = False

    def get_db_prep_lookup(self, value, connection):
        if not isinstance(value, RawSQL):
            raise TypeError("__among takes a RawSQL subquery of ids")
        return value.sql, list(value.params)

    def as_sql(self, compiler, connection):
        lhs, lhs_params = self.process_lhs(compiler, connection)
        sql, params = self.get_db_prep_lookup(self.rhs, connection)
        if connection.vendor == "postgresql":
            return f"{lhs} = ANY(ARRAY({sql}))", [*lhs_params, *params]
        return f"{lhs} IN ({sql})", [*lhs_params, *params]


# Fields and relations keep separate lookup registries: a relation's `env__among` compares its
# column as `env_id__among` does.
Field.register_lookup(Among)
ForeignObject.register_lookup(Among)
