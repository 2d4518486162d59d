"""What a data plane serves from, and how it gets it: the policy model, routing, keys, sync.

Modules: ``model`` (plain policies: consumers, key-auth, ai-proxy, provider targets),
``routing`` (Kong's route matching: prefix and regex paths, methods, hosts, headers, and
Kong's priorities), ``keys`` (key hashing, finding a request's key,
authenticating it), ``providers`` (each provider's endpoints and route types), ``gcp_tokens``
(Google Cloud access tokens of a service account, for Vertex AI targets), ``aws`` (SigV4
signing and AWS credentials for Bedrock targets: static keys, the credential chain, STS
AssumeRole, refreshed off the event loop), ``sync``
(xDS-style config stream: ACK/NACK, the compiler given by the composition root), ``cache``
(the last good snapshot on disk), ``cluster`` (the gRPC channel to the control plane, TLS),
``aws`` (SigV4 signers and AWS credentials) and ``gcp_tokens`` (Google OAuth2 tokens).

May import: ``dataplane.observability``, ``dataplane.usage``, ``dataplane.http`` and below.
"""
