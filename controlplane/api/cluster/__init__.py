"""Cluster-facing gRPC servicers: what data planes call (``meterline.dataplane.v1``) and health."""
