"""Portal tokens: short-lived bearer tokens scoped to one customer, for its usage portal.

Plain types (``types``), their storage (``storage``) and the use cases (``service``), in that
order of dependency; nothing here knows about HTTP or gRPC.
"""
