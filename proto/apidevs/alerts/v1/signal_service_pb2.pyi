import datetime

from apidevs.alerts.v1 import resources_pb2 as _resources_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DeliveryReportOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DELIVERY_REPORT_OUTCOME_UNSPECIFIED: _ClassVar[DeliveryReportOutcome]
    DELIVERY_REPORT_OUTCOME_DELIVERED: _ClassVar[DeliveryReportOutcome]
    DELIVERY_REPORT_OUTCOME_RETRY: _ClassVar[DeliveryReportOutcome]
    DELIVERY_REPORT_OUTCOME_FAILED: _ClassVar[DeliveryReportOutcome]
    DELIVERY_REPORT_OUTCOME_DEAD: _ClassVar[DeliveryReportOutcome]
    DELIVERY_REPORT_OUTCOME_RELEASED: _ClassVar[DeliveryReportOutcome]
DELIVERY_REPORT_OUTCOME_UNSPECIFIED: DeliveryReportOutcome
DELIVERY_REPORT_OUTCOME_DELIVERED: DeliveryReportOutcome
DELIVERY_REPORT_OUTCOME_RETRY: DeliveryReportOutcome
DELIVERY_REPORT_OUTCOME_FAILED: DeliveryReportOutcome
DELIVERY_REPORT_OUTCOME_DEAD: DeliveryReportOutcome
DELIVERY_REPORT_OUTCOME_RELEASED: DeliveryReportOutcome

class IngestWebhookRequest(_message.Message):
    __slots__ = ("webhook_token", "chart_id", "body", "content_type", "source_ip", "received_at", "user_agent", "query", "idempotency_key", "body_size", "edge_refusal", "request_id")
    class QueryEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    WEBHOOK_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CHART_ID_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_IP_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_AT_FIELD_NUMBER: _ClassVar[int]
    USER_AGENT_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    BODY_SIZE_FIELD_NUMBER: _ClassVar[int]
    EDGE_REFUSAL_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    webhook_token: str
    chart_id: str
    body: bytes
    content_type: str
    source_ip: str
    received_at: _timestamp_pb2.Timestamp
    user_agent: str
    query: _containers.ScalarMap[str, str]
    idempotency_key: str
    body_size: int
    edge_refusal: str
    request_id: str
    def __init__(self, webhook_token: _Optional[str] = ..., chart_id: _Optional[str] = ..., body: _Optional[bytes] = ..., content_type: _Optional[str] = ..., source_ip: _Optional[str] = ..., received_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., user_agent: _Optional[str] = ..., query: _Optional[_Mapping[str, str]] = ..., idempotency_key: _Optional[str] = ..., body_size: _Optional[int] = ..., edge_refusal: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class IngestWebhookResponse(_message.Message):
    __slots__ = ("signal_id", "screenshot_status", "estimated_wait_seconds", "duplicate")
    SIGNAL_ID_FIELD_NUMBER: _ClassVar[int]
    SCREENSHOT_STATUS_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    signal_id: str
    screenshot_status: _resources_pb2.ScreenshotStatus
    estimated_wait_seconds: int
    duplicate: bool
    def __init__(self, signal_id: _Optional[str] = ..., screenshot_status: _Optional[_Union[_resources_pb2.ScreenshotStatus, str]] = ..., estimated_wait_seconds: _Optional[int] = ..., duplicate: _Optional[bool] = ...) -> None: ...

class BatchIngestWebhooksRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[IngestWebhookRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[IngestWebhookRequest, _Mapping]]] = ...) -> None: ...

class BatchIngestWebhooksResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[IngestWebhookResult]
    def __init__(self, results: _Optional[_Iterable[_Union[IngestWebhookResult, _Mapping]]] = ...) -> None: ...

class IngestWebhookResult(_message.Message):
    __slots__ = ("response", "error_status")
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERROR_STATUS_FIELD_NUMBER: _ClassVar[int]
    response: IngestWebhookResponse
    error_status: bytes
    def __init__(self, response: _Optional[_Union[IngestWebhookResponse, _Mapping]] = ..., error_status: _Optional[bytes] = ...) -> None: ...

class GetSignalRequest(_message.Message):
    __slots__ = ("signal_id",)
    SIGNAL_ID_FIELD_NUMBER: _ClassVar[int]
    signal_id: str
    def __init__(self, signal_id: _Optional[str] = ...) -> None: ...

class ListSignalsRequest(_message.Message):
    __slots__ = ("user_id", "page_size", "page_token", "ticker", "indicator", "signal_type", "result", "created_after", "created_before", "screenshot_status")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TICKER_FIELD_NUMBER: _ClassVar[int]
    INDICATOR_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_TYPE_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AFTER_FIELD_NUMBER: _ClassVar[int]
    CREATED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    SCREENSHOT_STATUS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    page_size: int
    page_token: str
    ticker: str
    indicator: str
    signal_type: str
    result: _resources_pb2.SignalResult
    created_after: _timestamp_pb2.Timestamp
    created_before: _timestamp_pb2.Timestamp
    screenshot_status: _resources_pb2.ScreenshotStatus
    def __init__(self, user_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., ticker: _Optional[str] = ..., indicator: _Optional[str] = ..., signal_type: _Optional[str] = ..., result: _Optional[_Union[_resources_pb2.SignalResult, str]] = ..., created_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., screenshot_status: _Optional[_Union[_resources_pb2.ScreenshotStatus, str]] = ...) -> None: ...

class ListSignalsResponse(_message.Message):
    __slots__ = ("signals", "next_page_token")
    SIGNALS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    signals: _containers.RepeatedCompositeFieldContainer[_resources_pb2.Signal]
    next_page_token: str
    def __init__(self, signals: _Optional[_Iterable[_Union[_resources_pb2.Signal, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateSignalOutcomeRequest(_message.Message):
    __slots__ = ("signal_id", "result", "profit_loss", "notes")
    SIGNAL_ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    PROFIT_LOSS_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    signal_id: str
    result: _resources_pb2.SignalResult
    profit_loss: str
    notes: str
    def __init__(self, signal_id: _Optional[str] = ..., result: _Optional[_Union[_resources_pb2.SignalResult, str]] = ..., profit_loss: _Optional[str] = ..., notes: _Optional[str] = ...) -> None: ...

class GetUserStatsRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class SubscribeSignalsRequest(_message.Message):
    __slots__ = ("user_id", "after_cursor")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_CURSOR_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    after_cursor: str
    def __init__(self, user_id: _Optional[str] = ..., after_cursor: _Optional[str] = ...) -> None: ...

class ClaimCaptureRequest(_message.Message):
    __slots__ = ("signal_id", "attempt", "worker_id")
    SIGNAL_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    signal_id: str
    attempt: int
    worker_id: str
    def __init__(self, signal_id: _Optional[str] = ..., attempt: _Optional[int] = ..., worker_id: _Optional[str] = ...) -> None: ...

class ClaimCaptureResponse(_message.Message):
    __slots__ = ("proceed", "signal", "chart_id", "tradingview_session_ciphertext", "plan")
    PROCEED_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    CHART_ID_FIELD_NUMBER: _ClassVar[int]
    TRADINGVIEW_SESSION_CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    proceed: bool
    signal: _resources_pb2.Signal
    chart_id: str
    tradingview_session_ciphertext: bytes
    plan: _resources_pb2.Plan
    def __init__(self, proceed: _Optional[bool] = ..., signal: _Optional[_Union[_resources_pb2.Signal, _Mapping]] = ..., chart_id: _Optional[str] = ..., tradingview_session_ciphertext: _Optional[bytes] = ..., plan: _Optional[_Union[_resources_pb2.Plan, str]] = ...) -> None: ...

class ReportCaptureRequest(_message.Message):
    __slots__ = ("signal_id", "status", "object_key", "error", "size_bytes", "width", "height", "duration_ms", "attempt")
    SIGNAL_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    OBJECT_KEY_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    signal_id: str
    status: _resources_pb2.ScreenshotStatus
    object_key: str
    error: str
    size_bytes: int
    width: int
    height: int
    duration_ms: int
    attempt: int
    def __init__(self, signal_id: _Optional[str] = ..., status: _Optional[_Union[_resources_pb2.ScreenshotStatus, str]] = ..., object_key: _Optional[str] = ..., error: _Optional[str] = ..., size_bytes: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., duration_ms: _Optional[int] = ..., attempt: _Optional[int] = ...) -> None: ...

class ListFailedCapturesRequest(_message.Message):
    __slots__ = ("user_id", "page_size", "page_token")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    page_size: int
    page_token: str
    def __init__(self, user_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListFailedCapturesResponse(_message.Message):
    __slots__ = ("signals", "next_page_token")
    SIGNALS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    signals: _containers.RepeatedCompositeFieldContainer[_resources_pb2.Signal]
    next_page_token: str
    def __init__(self, signals: _Optional[_Iterable[_Union[_resources_pb2.Signal, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class RetryCapturesRequest(_message.Message):
    __slots__ = ("signal_ids", "all_failed")
    SIGNAL_IDS_FIELD_NUMBER: _ClassVar[int]
    ALL_FAILED_FIELD_NUMBER: _ClassVar[int]
    signal_ids: _containers.RepeatedScalarFieldContainer[str]
    all_failed: bool
    def __init__(self, signal_ids: _Optional[_Iterable[str]] = ..., all_failed: _Optional[bool] = ...) -> None: ...

class RetryCapturesResponse(_message.Message):
    __slots__ = ("requeued_count",)
    REQUEUED_COUNT_FIELD_NUMBER: _ClassVar[int]
    requeued_count: int
    def __init__(self, requeued_count: _Optional[int] = ...) -> None: ...

class GetServiceStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetServiceStatusResponse(_message.Message):
    __slots__ = ("database_ok", "broker_ok", "queue_length", "queue_lengths", "active_workers", "outbox_backlog")
    class QueueLengthsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    DATABASE_OK_FIELD_NUMBER: _ClassVar[int]
    BROKER_OK_FIELD_NUMBER: _ClassVar[int]
    QUEUE_LENGTH_FIELD_NUMBER: _ClassVar[int]
    QUEUE_LENGTHS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_WORKERS_FIELD_NUMBER: _ClassVar[int]
    OUTBOX_BACKLOG_FIELD_NUMBER: _ClassVar[int]
    database_ok: bool
    broker_ok: bool
    queue_length: int
    queue_lengths: _containers.ScalarMap[str, int]
    active_workers: int
    outbox_backlog: int
    def __init__(self, database_ok: _Optional[bool] = ..., broker_ok: _Optional[bool] = ..., queue_length: _Optional[int] = ..., queue_lengths: _Optional[_Mapping[str, int]] = ..., active_workers: _Optional[int] = ..., outbox_backlog: _Optional[int] = ...) -> None: ...

class ClaimSessionCheckRequest(_message.Message):
    __slots__ = ("user_id", "worker_id", "check_id")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    CHECK_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    worker_id: str
    check_id: str
    def __init__(self, user_id: _Optional[str] = ..., worker_id: _Optional[str] = ..., check_id: _Optional[str] = ...) -> None: ...

class ClaimSessionCheckResponse(_message.Message):
    __slots__ = ("proceed", "session_version", "tradingview_session_ciphertext", "chart_id", "ticker", "interval")
    PROCEED_FIELD_NUMBER: _ClassVar[int]
    SESSION_VERSION_FIELD_NUMBER: _ClassVar[int]
    TRADINGVIEW_SESSION_CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    CHART_ID_FIELD_NUMBER: _ClassVar[int]
    TICKER_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    proceed: bool
    session_version: str
    tradingview_session_ciphertext: bytes
    chart_id: str
    ticker: str
    interval: str
    def __init__(self, proceed: _Optional[bool] = ..., session_version: _Optional[str] = ..., tradingview_session_ciphertext: _Optional[bytes] = ..., chart_id: _Optional[str] = ..., ticker: _Optional[str] = ..., interval: _Optional[str] = ...) -> None: ...

class ReportSessionCheckRequest(_message.Message):
    __slots__ = ("user_id", "session_version", "valid", "reason", "worker_id")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_VERSION_FIELD_NUMBER: _ClassVar[int]
    VALID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    session_version: str
    valid: bool
    reason: str
    worker_id: str
    def __init__(self, user_id: _Optional[str] = ..., session_version: _Optional[str] = ..., valid: _Optional[bool] = ..., reason: _Optional[str] = ..., worker_id: _Optional[str] = ...) -> None: ...

class ClaimNotificationRequest(_message.Message):
    __slots__ = ("signal_id", "worker_id", "claim_id", "screenshot_wait_seconds", "lease_seconds")
    SIGNAL_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    CLAIM_ID_FIELD_NUMBER: _ClassVar[int]
    SCREENSHOT_WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LEASE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    signal_id: str
    worker_id: str
    claim_id: str
    screenshot_wait_seconds: int
    lease_seconds: int
    def __init__(self, signal_id: _Optional[str] = ..., worker_id: _Optional[str] = ..., claim_id: _Optional[str] = ..., screenshot_wait_seconds: _Optional[int] = ..., lease_seconds: _Optional[int] = ...) -> None: ...

class ClaimNotificationResponse(_message.Message):
    __slots__ = ("tasks", "signal", "retry_after_seconds", "secrets_ciphertext", "waiting_for_signal_id", "next_signal_ids")
    TASKS_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SECRETS_CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    WAITING_FOR_SIGNAL_ID_FIELD_NUMBER: _ClassVar[int]
    NEXT_SIGNAL_IDS_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[NotificationTask]
    signal: _resources_pb2.Signal
    retry_after_seconds: float
    secrets_ciphertext: bytes
    waiting_for_signal_id: str
    next_signal_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, tasks: _Optional[_Iterable[_Union[NotificationTask, _Mapping]]] = ..., signal: _Optional[_Union[_resources_pb2.Signal, _Mapping]] = ..., retry_after_seconds: _Optional[float] = ..., secrets_ciphertext: _Optional[bytes] = ..., waiting_for_signal_id: _Optional[str] = ..., next_signal_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class NotificationTask(_message.Message):
    __slots__ = ("delivery_id", "channel", "kind", "target", "attempts", "with_photo", "screenshot_object_key", "alert_message_id", "alert_with_photo", "created_at")
    DELIVERY_ID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    WITH_PHOTO_FIELD_NUMBER: _ClassVar[int]
    SCREENSHOT_OBJECT_KEY_FIELD_NUMBER: _ClassVar[int]
    ALERT_MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    ALERT_WITH_PHOTO_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    delivery_id: int
    channel: _resources_pb2.NotificationChannel
    kind: _resources_pb2.NotificationKind
    target: str
    attempts: int
    with_photo: bool
    screenshot_object_key: str
    alert_message_id: str
    alert_with_photo: bool
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, delivery_id: _Optional[int] = ..., channel: _Optional[_Union[_resources_pb2.NotificationChannel, str]] = ..., kind: _Optional[_Union[_resources_pb2.NotificationKind, str]] = ..., target: _Optional[str] = ..., attempts: _Optional[int] = ..., with_photo: _Optional[bool] = ..., screenshot_object_key: _Optional[str] = ..., alert_message_id: _Optional[str] = ..., alert_with_photo: _Optional[bool] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ReportNotificationRequest(_message.Message):
    __slots__ = ("delivery_id", "claim_id", "outcome", "provider_message_id", "error", "with_photo")
    DELIVERY_ID_FIELD_NUMBER: _ClassVar[int]
    CLAIM_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    WITH_PHOTO_FIELD_NUMBER: _ClassVar[int]
    delivery_id: int
    claim_id: str
    outcome: DeliveryReportOutcome
    provider_message_id: str
    error: str
    with_photo: bool
    def __init__(self, delivery_id: _Optional[int] = ..., claim_id: _Optional[str] = ..., outcome: _Optional[_Union[DeliveryReportOutcome, str]] = ..., provider_message_id: _Optional[str] = ..., error: _Optional[str] = ..., with_photo: _Optional[bool] = ...) -> None: ...

class ReportNotificationResponse(_message.Message):
    __slots__ = ("recorded", "delivery")
    RECORDED_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_FIELD_NUMBER: _ClassVar[int]
    recorded: bool
    delivery: _resources_pb2.NotificationDelivery
    def __init__(self, recorded: _Optional[bool] = ..., delivery: _Optional[_Union[_resources_pb2.NotificationDelivery, _Mapping]] = ...) -> None: ...

class ListFailedNotificationsRequest(_message.Message):
    __slots__ = ("user_id", "page_size", "page_token")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    page_size: int
    page_token: str
    def __init__(self, user_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListFailedNotificationsResponse(_message.Message):
    __slots__ = ("deliveries", "next_page_token")
    DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    deliveries: _containers.RepeatedCompositeFieldContainer[_resources_pb2.NotificationDelivery]
    next_page_token: str
    def __init__(self, deliveries: _Optional[_Iterable[_Union[_resources_pb2.NotificationDelivery, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class RetryNotificationsRequest(_message.Message):
    __slots__ = ("signal_ids", "all_failed")
    SIGNAL_IDS_FIELD_NUMBER: _ClassVar[int]
    ALL_FAILED_FIELD_NUMBER: _ClassVar[int]
    signal_ids: _containers.RepeatedScalarFieldContainer[str]
    all_failed: bool
    def __init__(self, signal_ids: _Optional[_Iterable[str]] = ..., all_failed: _Optional[bool] = ...) -> None: ...

class RetryNotificationsResponse(_message.Message):
    __slots__ = ("requeued_count",)
    REQUEUED_COUNT_FIELD_NUMBER: _ClassVar[int]
    requeued_count: int
    def __init__(self, requeued_count: _Optional[int] = ...) -> None: ...
