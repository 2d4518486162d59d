import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Snapshot(_message.Message):
    __slots__ = ("services", "routes", "consumers", "plugins", "consumer_entitlements", "balance_slices")
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    ROUTES_FIELD_NUMBER: _ClassVar[int]
    CONSUMERS_FIELD_NUMBER: _ClassVar[int]
    PLUGINS_FIELD_NUMBER: _ClassVar[int]
    CONSUMER_ENTITLEMENTS_FIELD_NUMBER: _ClassVar[int]
    BALANCE_SLICES_FIELD_NUMBER: _ClassVar[int]
    services: _containers.RepeatedCompositeFieldContainer[Service]
    routes: _containers.RepeatedCompositeFieldContainer[Route]
    consumers: _containers.RepeatedCompositeFieldContainer[Consumer]
    plugins: _containers.RepeatedCompositeFieldContainer[Plugin]
    consumer_entitlements: _containers.RepeatedCompositeFieldContainer[ConsumerEntitlements]
    balance_slices: int
    def __init__(self, services: _Optional[_Iterable[_Union[Service, _Mapping]]] = ..., routes: _Optional[_Iterable[_Union[Route, _Mapping]]] = ..., consumers: _Optional[_Iterable[_Union[Consumer, _Mapping]]] = ..., plugins: _Optional[_Iterable[_Union[Plugin, _Mapping]]] = ..., consumer_entitlements: _Optional[_Iterable[_Union[ConsumerEntitlements, _Mapping]]] = ..., balance_slices: _Optional[int] = ...) -> None: ...

class Service(_message.Message):
    __slots__ = ("id", "name", "url")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    url: str
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., url: _Optional[str] = ...) -> None: ...

class Route(_message.Message):
    __slots__ = ("id", "name", "service_id", "paths", "methods", "strip_path", "hosts", "headers", "protocols", "preserve_host", "regex_priority", "path_handling", "https_redirect_status_code", "request_buffering", "response_buffering", "snis")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SERVICE_ID_FIELD_NUMBER: _ClassVar[int]
    PATHS_FIELD_NUMBER: _ClassVar[int]
    METHODS_FIELD_NUMBER: _ClassVar[int]
    STRIP_PATH_FIELD_NUMBER: _ClassVar[int]
    HOSTS_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    PROTOCOLS_FIELD_NUMBER: _ClassVar[int]
    PRESERVE_HOST_FIELD_NUMBER: _ClassVar[int]
    REGEX_PRIORITY_FIELD_NUMBER: _ClassVar[int]
    PATH_HANDLING_FIELD_NUMBER: _ClassVar[int]
    HTTPS_REDIRECT_STATUS_CODE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_BUFFERING_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_BUFFERING_FIELD_NUMBER: _ClassVar[int]
    SNIS_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    service_id: str
    paths: _containers.RepeatedScalarFieldContainer[str]
    methods: _containers.RepeatedScalarFieldContainer[str]
    strip_path: bool
    hosts: _containers.RepeatedScalarFieldContainer[str]
    headers: _containers.RepeatedCompositeFieldContainer[RouteHeader]
    protocols: _containers.RepeatedScalarFieldContainer[str]
    preserve_host: bool
    regex_priority: int
    path_handling: str
    https_redirect_status_code: int
    request_buffering: bool
    response_buffering: bool
    snis: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., service_id: _Optional[str] = ..., paths: _Optional[_Iterable[str]] = ..., methods: _Optional[_Iterable[str]] = ..., strip_path: _Optional[bool] = ..., hosts: _Optional[_Iterable[str]] = ..., headers: _Optional[_Iterable[_Union[RouteHeader, _Mapping]]] = ..., protocols: _Optional[_Iterable[str]] = ..., preserve_host: _Optional[bool] = ..., regex_priority: _Optional[int] = ..., path_handling: _Optional[str] = ..., https_redirect_status_code: _Optional[int] = ..., request_buffering: _Optional[bool] = ..., response_buffering: _Optional[bool] = ..., snis: _Optional[_Iterable[str]] = ...) -> None: ...

class RouteHeader(_message.Message):
    __slots__ = ("name", "values")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    name: str
    values: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., values: _Optional[_Iterable[str]] = ...) -> None: ...

class Consumer(_message.Message):
    __slots__ = ("id", "username", "custom_id", "key_hashes")
    ID_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_HASHES_FIELD_NUMBER: _ClassVar[int]
    id: str
    username: str
    custom_id: str
    key_hashes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., username: _Optional[str] = ..., custom_id: _Optional[str] = ..., key_hashes: _Optional[_Iterable[str]] = ...) -> None: ...

class Plugin(_message.Message):
    __slots__ = ("id", "name", "service_id", "route_id", "consumer_id", "enabled", "key_auth", "ai_proxy", "rate_limiting")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SERVICE_ID_FIELD_NUMBER: _ClassVar[int]
    ROUTE_ID_FIELD_NUMBER: _ClassVar[int]
    CONSUMER_ID_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    KEY_AUTH_FIELD_NUMBER: _ClassVar[int]
    AI_PROXY_FIELD_NUMBER: _ClassVar[int]
    RATE_LIMITING_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    service_id: str
    route_id: str
    consumer_id: str
    enabled: bool
    key_auth: KeyAuthConfig
    ai_proxy: AiProxyConfig
    rate_limiting: RateLimitingConfig
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., service_id: _Optional[str] = ..., route_id: _Optional[str] = ..., consumer_id: _Optional[str] = ..., enabled: _Optional[bool] = ..., key_auth: _Optional[_Union[KeyAuthConfig, _Mapping]] = ..., ai_proxy: _Optional[_Union[AiProxyConfig, _Mapping]] = ..., rate_limiting: _Optional[_Union[RateLimitingConfig, _Mapping]] = ...) -> None: ...

class RateLimitingConfig(_message.Message):
    __slots__ = ("windows", "window_type", "identifier", "header_name", "strategy", "redis", "namespace", "fault_tolerant", "hide_client_headers", "tokens_count_strategy", "error_code", "error_message", "policies")
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_TYPE_FIELD_NUMBER: _ClassVar[int]
    IDENTIFIER_FIELD_NUMBER: _ClassVar[int]
    HEADER_NAME_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    REDIS_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    FAULT_TOLERANT_FIELD_NUMBER: _ClassVar[int]
    HIDE_CLIENT_HEADERS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_COUNT_STRATEGY_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    windows: _containers.RepeatedCompositeFieldContainer[RateLimitWindow]
    window_type: str
    identifier: str
    header_name: str
    strategy: str
    redis: RateLimitRedis
    namespace: str
    fault_tolerant: bool
    hide_client_headers: bool
    tokens_count_strategy: str
    error_code: int
    error_message: str
    policies: _containers.RepeatedCompositeFieldContainer[RateLimitPolicy]
    def __init__(self, windows: _Optional[_Iterable[_Union[RateLimitWindow, _Mapping]]] = ..., window_type: _Optional[str] = ..., identifier: _Optional[str] = ..., header_name: _Optional[str] = ..., strategy: _Optional[str] = ..., redis: _Optional[_Union[RateLimitRedis, _Mapping]] = ..., namespace: _Optional[str] = ..., fault_tolerant: _Optional[bool] = ..., hide_client_headers: _Optional[bool] = ..., tokens_count_strategy: _Optional[str] = ..., error_code: _Optional[int] = ..., error_message: _Optional[str] = ..., policies: _Optional[_Iterable[_Union[RateLimitPolicy, _Mapping]]] = ...) -> None: ...

class RateLimitWindow(_message.Message):
    __slots__ = ("limit", "window_size", "provider")
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    WINDOW_SIZE_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    limit: str
    window_size: int
    provider: str
    def __init__(self, limit: _Optional[str] = ..., window_size: _Optional[int] = ..., provider: _Optional[str] = ...) -> None: ...

class RateLimitPolicy(_message.Message):
    __slots__ = ("id", "matches", "limits", "window_type")
    ID_FIELD_NUMBER: _ClassVar[int]
    MATCHES_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_TYPE_FIELD_NUMBER: _ClassVar[int]
    id: str
    matches: _containers.RepeatedCompositeFieldContainer[RateLimitMatch]
    limits: _containers.RepeatedCompositeFieldContainer[RateLimitPolicyLimit]
    window_type: str
    def __init__(self, id: _Optional[str] = ..., matches: _Optional[_Iterable[_Union[RateLimitMatch, _Mapping]]] = ..., limits: _Optional[_Iterable[_Union[RateLimitPolicyLimit, _Mapping]]] = ..., window_type: _Optional[str] = ...) -> None: ...

class RateLimitMatch(_message.Message):
    __slots__ = ("type", "key", "values", "partition_by")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    PARTITION_BY_FIELD_NUMBER: _ClassVar[int]
    type: str
    key: str
    values: _containers.RepeatedScalarFieldContainer[str]
    partition_by: bool
    def __init__(self, type: _Optional[str] = ..., key: _Optional[str] = ..., values: _Optional[_Iterable[str]] = ..., partition_by: _Optional[bool] = ...) -> None: ...

class RateLimitPolicyLimit(_message.Message):
    __slots__ = ("limit", "window_size", "tokens_count_strategy")
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    WINDOW_SIZE_FIELD_NUMBER: _ClassVar[int]
    TOKENS_COUNT_STRATEGY_FIELD_NUMBER: _ClassVar[int]
    limit: str
    window_size: int
    tokens_count_strategy: str
    def __init__(self, limit: _Optional[str] = ..., window_size: _Optional[int] = ..., tokens_count_strategy: _Optional[str] = ...) -> None: ...

class RateLimitRedis(_message.Message):
    __slots__ = ("host", "port", "database", "username", "password", "timeout")
    HOST_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    host: str
    port: int
    database: int
    username: str
    password: str
    timeout: int
    def __init__(self, host: _Optional[str] = ..., port: _Optional[int] = ..., database: _Optional[int] = ..., username: _Optional[str] = ..., password: _Optional[str] = ..., timeout: _Optional[int] = ...) -> None: ...

class KeyAuthConfig(_message.Message):
    __slots__ = ("key_names", "hide_credentials", "key_in_query", "key_in_bearer", "key_in_body", "anonymous_consumer_id", "run_on_preflight", "realm")
    KEY_NAMES_FIELD_NUMBER: _ClassVar[int]
    HIDE_CREDENTIALS_FIELD_NUMBER: _ClassVar[int]
    KEY_IN_QUERY_FIELD_NUMBER: _ClassVar[int]
    KEY_IN_BEARER_FIELD_NUMBER: _ClassVar[int]
    KEY_IN_BODY_FIELD_NUMBER: _ClassVar[int]
    ANONYMOUS_CONSUMER_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ON_PREFLIGHT_FIELD_NUMBER: _ClassVar[int]
    REALM_FIELD_NUMBER: _ClassVar[int]
    key_names: _containers.RepeatedScalarFieldContainer[str]
    hide_credentials: bool
    key_in_query: bool
    key_in_bearer: bool
    key_in_body: bool
    anonymous_consumer_id: str
    run_on_preflight: bool
    realm: str
    def __init__(self, key_names: _Optional[_Iterable[str]] = ..., hide_credentials: _Optional[bool] = ..., key_in_query: _Optional[bool] = ..., key_in_bearer: _Optional[bool] = ..., key_in_body: _Optional[bool] = ..., anonymous_consumer_id: _Optional[str] = ..., run_on_preflight: _Optional[bool] = ..., realm: _Optional[str] = ...) -> None: ...

class AiProxyConfig(_message.Message):
    __slots__ = ("route_type", "auth", "model", "llm_format", "targets", "balancer", "model_allow_list", "model_aliases", "connect_timeout", "read_timeout", "write_timeout", "response_streaming", "max_request_body_size", "model_name_header", "log_payloads")
    class ModelAliasesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ROUTE_TYPE_FIELD_NUMBER: _ClassVar[int]
    AUTH_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LLM_FORMAT_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    BALANCER_FIELD_NUMBER: _ClassVar[int]
    MODEL_ALLOW_LIST_FIELD_NUMBER: _ClassVar[int]
    MODEL_ALIASES_FIELD_NUMBER: _ClassVar[int]
    CONNECT_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    READ_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    WRITE_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_STREAMING_FIELD_NUMBER: _ClassVar[int]
    MAX_REQUEST_BODY_SIZE_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_HEADER_FIELD_NUMBER: _ClassVar[int]
    LOG_PAYLOADS_FIELD_NUMBER: _ClassVar[int]
    route_type: str
    auth: AiProxyAuth
    model: AiProxyModel
    llm_format: str
    targets: _containers.RepeatedCompositeFieldContainer[AiProxyTarget]
    balancer: AiProxyBalancer
    model_allow_list: _containers.RepeatedScalarFieldContainer[str]
    model_aliases: _containers.ScalarMap[str, str]
    connect_timeout: int
    read_timeout: int
    write_timeout: int
    response_streaming: str
    max_request_body_size: int
    model_name_header: bool
    log_payloads: bool
    def __init__(self, route_type: _Optional[str] = ..., auth: _Optional[_Union[AiProxyAuth, _Mapping]] = ..., model: _Optional[_Union[AiProxyModel, _Mapping]] = ..., llm_format: _Optional[str] = ..., targets: _Optional[_Iterable[_Union[AiProxyTarget, _Mapping]]] = ..., balancer: _Optional[_Union[AiProxyBalancer, _Mapping]] = ..., model_allow_list: _Optional[_Iterable[str]] = ..., model_aliases: _Optional[_Mapping[str, str]] = ..., connect_timeout: _Optional[int] = ..., read_timeout: _Optional[int] = ..., write_timeout: _Optional[int] = ..., response_streaming: _Optional[str] = ..., max_request_body_size: _Optional[int] = ..., model_name_header: _Optional[bool] = ..., log_payloads: _Optional[bool] = ...) -> None: ...

class AiProxyTarget(_message.Message):
    __slots__ = ("route_type", "auth", "model", "weight", "description", "priority", "connect_timeout", "read_timeout", "log_payloads")
    ROUTE_TYPE_FIELD_NUMBER: _ClassVar[int]
    AUTH_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    CONNECT_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    READ_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    LOG_PAYLOADS_FIELD_NUMBER: _ClassVar[int]
    route_type: str
    auth: AiProxyAuth
    model: AiProxyModel
    weight: int
    description: str
    priority: int
    connect_timeout: int
    read_timeout: int
    log_payloads: bool
    def __init__(self, route_type: _Optional[str] = ..., auth: _Optional[_Union[AiProxyAuth, _Mapping]] = ..., model: _Optional[_Union[AiProxyModel, _Mapping]] = ..., weight: _Optional[int] = ..., description: _Optional[str] = ..., priority: _Optional[int] = ..., connect_timeout: _Optional[int] = ..., read_timeout: _Optional[int] = ..., log_payloads: _Optional[bool] = ...) -> None: ...

class AiProxyBalancer(_message.Message):
    __slots__ = ("algorithm", "hash_on_header", "retries", "failover_criteria", "connect_timeout", "read_timeout", "write_timeout", "tokens_count_strategy", "latency_strategy", "max_fails", "fail_timeout")
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    HASH_ON_HEADER_FIELD_NUMBER: _ClassVar[int]
    RETRIES_FIELD_NUMBER: _ClassVar[int]
    FAILOVER_CRITERIA_FIELD_NUMBER: _ClassVar[int]
    CONNECT_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    READ_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    WRITE_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    TOKENS_COUNT_STRATEGY_FIELD_NUMBER: _ClassVar[int]
    LATENCY_STRATEGY_FIELD_NUMBER: _ClassVar[int]
    MAX_FAILS_FIELD_NUMBER: _ClassVar[int]
    FAIL_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    algorithm: str
    hash_on_header: str
    retries: int
    failover_criteria: _containers.RepeatedScalarFieldContainer[str]
    connect_timeout: int
    read_timeout: int
    write_timeout: int
    tokens_count_strategy: str
    latency_strategy: str
    max_fails: int
    fail_timeout: int
    def __init__(self, algorithm: _Optional[str] = ..., hash_on_header: _Optional[str] = ..., retries: _Optional[int] = ..., failover_criteria: _Optional[_Iterable[str]] = ..., connect_timeout: _Optional[int] = ..., read_timeout: _Optional[int] = ..., write_timeout: _Optional[int] = ..., tokens_count_strategy: _Optional[str] = ..., latency_strategy: _Optional[str] = ..., max_fails: _Optional[int] = ..., fail_timeout: _Optional[int] = ...) -> None: ...

class AiProxyAuth(_message.Message):
    __slots__ = ("header_name", "header_value", "param_name", "param_value", "param_location", "gcp_use_service_account", "gcp_service_account_json", "gcp_oauth_token_url", "aws_access_key_id", "aws_secret_access_key", "allow_override")
    HEADER_NAME_FIELD_NUMBER: _ClassVar[int]
    HEADER_VALUE_FIELD_NUMBER: _ClassVar[int]
    PARAM_NAME_FIELD_NUMBER: _ClassVar[int]
    PARAM_VALUE_FIELD_NUMBER: _ClassVar[int]
    PARAM_LOCATION_FIELD_NUMBER: _ClassVar[int]
    GCP_USE_SERVICE_ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    GCP_SERVICE_ACCOUNT_JSON_FIELD_NUMBER: _ClassVar[int]
    GCP_OAUTH_TOKEN_URL_FIELD_NUMBER: _ClassVar[int]
    AWS_ACCESS_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    AWS_SECRET_ACCESS_KEY_FIELD_NUMBER: _ClassVar[int]
    ALLOW_OVERRIDE_FIELD_NUMBER: _ClassVar[int]
    header_name: str
    header_value: str
    param_name: str
    param_value: str
    param_location: str
    gcp_use_service_account: bool
    gcp_service_account_json: str
    gcp_oauth_token_url: str
    aws_access_key_id: str
    aws_secret_access_key: str
    allow_override: bool
    def __init__(self, header_name: _Optional[str] = ..., header_value: _Optional[str] = ..., param_name: _Optional[str] = ..., param_value: _Optional[str] = ..., param_location: _Optional[str] = ..., gcp_use_service_account: _Optional[bool] = ..., gcp_service_account_json: _Optional[str] = ..., gcp_oauth_token_url: _Optional[str] = ..., aws_access_key_id: _Optional[str] = ..., aws_secret_access_key: _Optional[str] = ..., allow_override: _Optional[bool] = ...) -> None: ...

class AiProxyModel(_message.Message):
    __slots__ = ("provider", "name", "options", "model_alias")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    MODEL_ALIAS_FIELD_NUMBER: _ClassVar[int]
    provider: str
    name: str
    options: AiProxyModelOptions
    model_alias: str
    def __init__(self, provider: _Optional[str] = ..., name: _Optional[str] = ..., options: _Optional[_Union[AiProxyModelOptions, _Mapping]] = ..., model_alias: _Optional[str] = ...) -> None: ...

class AiProxyModelOptions(_message.Message):
    __slots__ = ("upstream_url", "anthropic_version", "max_tokens", "input_cost", "output_cost", "azure_instance", "azure_deployment_id", "azure_api_version", "gemini", "bedrock", "mistral_format", "llama2_format", "dashscope", "databricks", "temperature", "top_p", "top_k", "upstream_path")
    UPSTREAM_URL_FIELD_NUMBER: _ClassVar[int]
    ANTHROPIC_VERSION_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    INPUT_COST_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_COST_FIELD_NUMBER: _ClassVar[int]
    AZURE_INSTANCE_FIELD_NUMBER: _ClassVar[int]
    AZURE_DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    AZURE_API_VERSION_FIELD_NUMBER: _ClassVar[int]
    GEMINI_FIELD_NUMBER: _ClassVar[int]
    BEDROCK_FIELD_NUMBER: _ClassVar[int]
    MISTRAL_FORMAT_FIELD_NUMBER: _ClassVar[int]
    LLAMA2_FORMAT_FIELD_NUMBER: _ClassVar[int]
    DASHSCOPE_FIELD_NUMBER: _ClassVar[int]
    DATABRICKS_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_PATH_FIELD_NUMBER: _ClassVar[int]
    upstream_url: str
    anthropic_version: str
    max_tokens: int
    input_cost: str
    output_cost: str
    azure_instance: str
    azure_deployment_id: str
    azure_api_version: str
    gemini: GeminiOptions
    bedrock: AiProxyBedrockOptions
    mistral_format: str
    llama2_format: str
    dashscope: DashscopeOptions
    databricks: DatabricksOptions
    temperature: float
    top_p: float
    top_k: int
    upstream_path: str
    def __init__(self, upstream_url: _Optional[str] = ..., anthropic_version: _Optional[str] = ..., max_tokens: _Optional[int] = ..., input_cost: _Optional[str] = ..., output_cost: _Optional[str] = ..., azure_instance: _Optional[str] = ..., azure_deployment_id: _Optional[str] = ..., azure_api_version: _Optional[str] = ..., gemini: _Optional[_Union[GeminiOptions, _Mapping]] = ..., bedrock: _Optional[_Union[AiProxyBedrockOptions, _Mapping]] = ..., mistral_format: _Optional[str] = ..., llama2_format: _Optional[str] = ..., dashscope: _Optional[_Union[DashscopeOptions, _Mapping]] = ..., databricks: _Optional[_Union[DatabricksOptions, _Mapping]] = ..., temperature: _Optional[float] = ..., top_p: _Optional[float] = ..., top_k: _Optional[int] = ..., upstream_path: _Optional[str] = ...) -> None: ...

class DashscopeOptions(_message.Message):
    __slots__ = ("international",)
    INTERNATIONAL_FIELD_NUMBER: _ClassVar[int]
    international: bool
    def __init__(self, international: _Optional[bool] = ...) -> None: ...

class DatabricksOptions(_message.Message):
    __slots__ = ("workspace_instance_id",)
    WORKSPACE_INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    workspace_instance_id: str
    def __init__(self, workspace_instance_id: _Optional[str] = ...) -> None: ...

class GeminiOptions(_message.Message):
    __slots__ = ("api_endpoint", "project_id", "location_id", "endpoint_id")
    API_ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    LOCATION_ID_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    api_endpoint: str
    project_id: str
    location_id: str
    endpoint_id: str
    def __init__(self, api_endpoint: _Optional[str] = ..., project_id: _Optional[str] = ..., location_id: _Optional[str] = ..., endpoint_id: _Optional[str] = ...) -> None: ...

class AiProxyBedrockOptions(_message.Message):
    __slots__ = ("aws_region", "aws_assume_role_arn", "aws_role_session_name", "aws_sts_endpoint_url")
    AWS_REGION_FIELD_NUMBER: _ClassVar[int]
    AWS_ASSUME_ROLE_ARN_FIELD_NUMBER: _ClassVar[int]
    AWS_ROLE_SESSION_NAME_FIELD_NUMBER: _ClassVar[int]
    AWS_STS_ENDPOINT_URL_FIELD_NUMBER: _ClassVar[int]
    aws_region: str
    aws_assume_role_arn: str
    aws_role_session_name: str
    aws_sts_endpoint_url: str
    def __init__(self, aws_region: _Optional[str] = ..., aws_assume_role_arn: _Optional[str] = ..., aws_role_session_name: _Optional[str] = ..., aws_sts_endpoint_url: _Optional[str] = ...) -> None: ...

class ConsumerEntitlements(_message.Message):
    __slots__ = ("consumer_id", "username", "customer", "has_access", "metered", "currency", "prices", "budgets", "credits")
    CONSUMER_ID_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_FIELD_NUMBER: _ClassVar[int]
    HAS_ACCESS_FIELD_NUMBER: _ClassVar[int]
    METERED_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    PRICES_FIELD_NUMBER: _ClassVar[int]
    BUDGETS_FIELD_NUMBER: _ClassVar[int]
    CREDITS_FIELD_NUMBER: _ClassVar[int]
    consumer_id: str
    username: str
    customer: str
    has_access: bool
    metered: _containers.RepeatedCompositeFieldContainer[MeteredEntitlement]
    currency: str
    prices: _containers.RepeatedCompositeFieldContainer[TokenPrice]
    budgets: _containers.RepeatedCompositeFieldContainer[BudgetState]
    credits: CreditState
    def __init__(self, consumer_id: _Optional[str] = ..., username: _Optional[str] = ..., customer: _Optional[str] = ..., has_access: _Optional[bool] = ..., metered: _Optional[_Iterable[_Union[MeteredEntitlement, _Mapping]]] = ..., currency: _Optional[str] = ..., prices: _Optional[_Iterable[_Union[TokenPrice, _Mapping]]] = ..., budgets: _Optional[_Iterable[_Union[BudgetState, _Mapping]]] = ..., credits: _Optional[_Union[CreditState, _Mapping]] = ...) -> None: ...

class CreditState(_message.Message):
    __slots__ = ("credit_id", "balance", "feature_balances")
    class FeatureBalancesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CREDIT_ID_FIELD_NUMBER: _ClassVar[int]
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    FEATURE_BALANCES_FIELD_NUMBER: _ClassVar[int]
    credit_id: str
    balance: str
    feature_balances: _containers.ScalarMap[str, str]
    def __init__(self, credit_id: _Optional[str] = ..., balance: _Optional[str] = ..., feature_balances: _Optional[_Mapping[str, str]] = ...) -> None: ...

class TokenPrice(_message.Message):
    __slots__ = ("feature", "filters", "unit_price", "settlement_mode")
    class FiltersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    UNIT_PRICE_FIELD_NUMBER: _ClassVar[int]
    SETTLEMENT_MODE_FIELD_NUMBER: _ClassVar[int]
    feature: str
    filters: _containers.ScalarMap[str, str]
    unit_price: str
    settlement_mode: str
    def __init__(self, feature: _Optional[str] = ..., filters: _Optional[_Mapping[str, str]] = ..., unit_price: _Optional[str] = ..., settlement_mode: _Optional[str] = ...) -> None: ...

class BudgetState(_message.Message):
    __slots__ = ("budget_id", "amount", "spent", "hard", "period_end_time")
    BUDGET_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    SPENT_FIELD_NUMBER: _ClassVar[int]
    HARD_FIELD_NUMBER: _ClassVar[int]
    PERIOD_END_TIME_FIELD_NUMBER: _ClassVar[int]
    budget_id: str
    amount: str
    spent: str
    hard: bool
    period_end_time: _timestamp_pb2.Timestamp
    def __init__(self, budget_id: _Optional[str] = ..., amount: _Optional[str] = ..., spent: _Optional[str] = ..., hard: _Optional[bool] = ..., period_end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class MeteredEntitlement(_message.Message):
    __slots__ = ("balance_id", "feature", "filters", "has_access", "balance", "soft_limit", "period_end_time", "limit")
    class FiltersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    BALANCE_ID_FIELD_NUMBER: _ClassVar[int]
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    HAS_ACCESS_FIELD_NUMBER: _ClassVar[int]
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    SOFT_LIMIT_FIELD_NUMBER: _ClassVar[int]
    PERIOD_END_TIME_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    balance_id: str
    feature: str
    filters: _containers.ScalarMap[str, str]
    has_access: bool
    balance: int
    soft_limit: bool
    period_end_time: _timestamp_pb2.Timestamp
    limit: int
    def __init__(self, balance_id: _Optional[str] = ..., feature: _Optional[str] = ..., filters: _Optional[_Mapping[str, str]] = ..., has_access: _Optional[bool] = ..., balance: _Optional[int] = ..., soft_limit: _Optional[bool] = ..., period_end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., limit: _Optional[int] = ...) -> None: ...
