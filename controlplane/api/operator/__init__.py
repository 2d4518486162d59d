"""Operator-facing gRPC servicers (``meterline.admin.v1``); translation only."""
