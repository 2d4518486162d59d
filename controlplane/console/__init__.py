"""The operator console and the customer portal: server-rendered HTML over the admin API.

Every page calls the same servicers the gRPC API registers (``api.ConsoleApi``), in process,
so a page is a rendering of what the API returns and its JSON twin (``/x.json``) is that
answer. ``sessions`` holds sign-in and CSRF state, ``auth`` turns tokens into principals,
``overview`` and ``portal`` compose API answers into page data, ``app`` routes requests and
``server`` runs uvicorn inside the control plane's event loop. May import ``controlplane.api``
and domain packages; nothing imports this package but the composition root and the CLI.
"""
