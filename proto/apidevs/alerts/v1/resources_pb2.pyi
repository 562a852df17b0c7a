import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Plan(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PLAN_UNSPECIFIED: _ClassVar[Plan]
    PLAN_FREE: _ClassVar[Plan]
    PLAN_BASIC: _ClassVar[Plan]
    PLAN_PRO: _ClassVar[Plan]
    PLAN_PREMIUM: _ClassVar[Plan]

class ScreenshotStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SCREENSHOT_STATUS_UNSPECIFIED: _ClassVar[ScreenshotStatus]
    SCREENSHOT_STATUS_PENDING: _ClassVar[ScreenshotStatus]
    SCREENSHOT_STATUS_PROCESSING: _ClassVar[ScreenshotStatus]
    SCREENSHOT_STATUS_COMPLETED: _ClassVar[ScreenshotStatus]
    SCREENSHOT_STATUS_FAILED: _ClassVar[ScreenshotStatus]
    SCREENSHOT_STATUS_SKIPPED: _ClassVar[ScreenshotStatus]
    SCREENSHOT_STATUS_EXPIRED: _ClassVar[ScreenshotStatus]

class SignalResult(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SIGNAL_RESULT_UNSPECIFIED: _ClassVar[SignalResult]
    SIGNAL_RESULT_PENDING: _ClassVar[SignalResult]
    SIGNAL_RESULT_WIN: _ClassVar[SignalResult]
    SIGNAL_RESULT_LOSS: _ClassVar[SignalResult]
    SIGNAL_RESULT_SKIP: _ClassVar[SignalResult]

class ParseStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PARSE_STATUS_UNSPECIFIED: _ClassVar[ParseStatus]
    PARSE_STATUS_COMPLETE: _ClassVar[ParseStatus]
    PARSE_STATUS_PARTIAL: _ClassVar[ParseStatus]
    PARSE_STATUS_FAILED: _ClassVar[ParseStatus]

class SignalEventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SIGNAL_EVENT_TYPE_UNSPECIFIED: _ClassVar[SignalEventType]
    SIGNAL_EVENT_TYPE_CREATED: _ClassVar[SignalEventType]
    SIGNAL_EVENT_TYPE_SCREENSHOT_UPDATED: _ClassVar[SignalEventType]
    SIGNAL_EVENT_TYPE_OUTCOME_UPDATED: _ClassVar[SignalEventType]
    SIGNAL_EVENT_TYPE_TRADINGVIEW_SESSION_UPDATED: _ClassVar[SignalEventType]

class NotificationChannel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NOTIFICATION_CHANNEL_UNSPECIFIED: _ClassVar[NotificationChannel]
    NOTIFICATION_CHANNEL_TELEGRAM: _ClassVar[NotificationChannel]
    NOTIFICATION_CHANNEL_DISCORD: _ClassVar[NotificationChannel]
    NOTIFICATION_CHANNEL_WEBHOOK: _ClassVar[NotificationChannel]

class NotificationKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NOTIFICATION_KIND_UNSPECIFIED: _ClassVar[NotificationKind]
    NOTIFICATION_KIND_ALERT: _ClassVar[NotificationKind]
    NOTIFICATION_KIND_PHOTO: _ClassVar[NotificationKind]
    NOTIFICATION_KIND_OUTCOME: _ClassVar[NotificationKind]

class DeliveryStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DELIVERY_STATUS_UNSPECIFIED: _ClassVar[DeliveryStatus]
    DELIVERY_STATUS_PENDING: _ClassVar[DeliveryStatus]
    DELIVERY_STATUS_SENDING: _ClassVar[DeliveryStatus]
    DELIVERY_STATUS_DELIVERED: _ClassVar[DeliveryStatus]
    DELIVERY_STATUS_SKIPPED: _ClassVar[DeliveryStatus]
    DELIVERY_STATUS_FAILED: _ClassVar[DeliveryStatus]
    DELIVERY_STATUS_DEAD: _ClassVar[DeliveryStatus]
PLAN_UNSPECIFIED: Plan
PLAN_FREE: Plan
PLAN_BASIC: Plan
PLAN_PRO: Plan
PLAN_PREMIUM: Plan
SCREENSHOT_STATUS_UNSPECIFIED: ScreenshotStatus
SCREENSHOT_STATUS_PENDING: ScreenshotStatus
SCREENSHOT_STATUS_PROCESSING: ScreenshotStatus
SCREENSHOT_STATUS_COMPLETED: ScreenshotStatus
SCREENSHOT_STATUS_FAILED: ScreenshotStatus
SCREENSHOT_STATUS_SKIPPED: ScreenshotStatus
SCREENSHOT_STATUS_EXPIRED: ScreenshotStatus
SIGNAL_RESULT_UNSPECIFIED: SignalResult
SIGNAL_RESULT_PENDING: SignalResult
SIGNAL_RESULT_WIN: SignalResult
SIGNAL_RESULT_LOSS: SignalResult
SIGNAL_RESULT_SKIP: SignalResult
PARSE_STATUS_UNSPECIFIED: ParseStatus
PARSE_STATUS_COMPLETE: ParseStatus
PARSE_STATUS_PARTIAL: ParseStatus
PARSE_STATUS_FAILED: ParseStatus
SIGNAL_EVENT_TYPE_UNSPECIFIED: SignalEventType
SIGNAL_EVENT_TYPE_CREATED: SignalEventType
SIGNAL_EVENT_TYPE_SCREENSHOT_UPDATED: SignalEventType
SIGNAL_EVENT_TYPE_OUTCOME_UPDATED: SignalEventType
SIGNAL_EVENT_TYPE_TRADINGVIEW_SESSION_UPDATED: SignalEventType
NOTIFICATION_CHANNEL_UNSPECIFIED: NotificationChannel
NOTIFICATION_CHANNEL_TELEGRAM: NotificationChannel
NOTIFICATION_CHANNEL_DISCORD: NotificationChannel
NOTIFICATION_CHANNEL_WEBHOOK: NotificationChannel
NOTIFICATION_KIND_UNSPECIFIED: NotificationKind
NOTIFICATION_KIND_ALERT: NotificationKind
NOTIFICATION_KIND_PHOTO: NotificationKind
NOTIFICATION_KIND_OUTCOME: NotificationKind
DELIVERY_STATUS_UNSPECIFIED: DeliveryStatus
DELIVERY_STATUS_PENDING: DeliveryStatus
DELIVERY_STATUS_SENDING: DeliveryStatus
DELIVERY_STATUS_DELIVERED: DeliveryStatus
DELIVERY_STATUS_SKIPPED: DeliveryStatus
DELIVERY_STATUS_FAILED: DeliveryStatus
DELIVERY_STATUS_DEAD: DeliveryStatus

class NotificationDelivery(_message.Message):
    __slots__ = ("channel", "kind", "status", "attempts", "last_error", "provider_message_id", "with_photo", "created_at", "updated_at", "delivered_at", "signal_id")
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    WITH_PHOTO_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    DELIVERED_AT_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_ID_FIELD_NUMBER: _ClassVar[int]
    channel: NotificationChannel
    kind: NotificationKind
    status: DeliveryStatus
    attempts: int
    last_error: str
    provider_message_id: str
    with_photo: bool
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    delivered_at: _timestamp_pb2.Timestamp
    signal_id: str
    def __init__(self, channel: _Optional[_Union[NotificationChannel, str]] = ..., kind: _Optional[_Union[NotificationKind, str]] = ..., status: _Optional[_Union[DeliveryStatus, str]] = ..., attempts: _Optional[int] = ..., last_error: _Optional[str] = ..., provider_message_id: _Optional[str] = ..., with_photo: _Optional[bool] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., delivered_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., signal_id: _Optional[str] = ...) -> None: ...

class Signal(_message.Message):
    __slots__ = ("signal_id", "user_id", "chart_id", "indicator", "ticker", "exchange", "symbol", "price", "signal_type", "interval", "alert_time", "parse_status", "parse_problems", "extra", "raw_text", "content_type", "screenshot_status", "screenshot_object_key", "screenshot_url", "screenshot_error", "result", "profit_loss", "notes", "created_at", "updated_at", "screenshot_completed_at", "deliveries")
    SIGNAL_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    CHART_ID_FIELD_NUMBER: _ClassVar[int]
    INDICATOR_FIELD_NUMBER: _ClassVar[int]
    TICKER_FIELD_NUMBER: _ClassVar[int]
    EXCHANGE_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_TYPE_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    ALERT_TIME_FIELD_NUMBER: _ClassVar[int]
    PARSE_STATUS_FIELD_NUMBER: _ClassVar[int]
    PARSE_PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    EXTRA_FIELD_NUMBER: _ClassVar[int]
    RAW_TEXT_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    SCREENSHOT_STATUS_FIELD_NUMBER: _ClassVar[int]
    SCREENSHOT_OBJECT_KEY_FIELD_NUMBER: _ClassVar[int]
    SCREENSHOT_URL_FIELD_NUMBER: _ClassVar[int]
    SCREENSHOT_ERROR_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    PROFIT_LOSS_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    SCREENSHOT_COMPLETED_AT_FIELD_NUMBER: _ClassVar[int]
    DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    signal_id: str
    user_id: str
    chart_id: str
    indicator: str
    ticker: str
    exchange: str
    symbol: str
    price: str
    signal_type: str
    interval: str
    alert_time: _timestamp_pb2.Timestamp
    parse_status: ParseStatus
    parse_problems: _containers.RepeatedScalarFieldContainer[str]
    extra: _struct_pb2.Struct
    raw_text: str
    content_type: str
    screenshot_status: ScreenshotStatus
    screenshot_object_key: str
    screenshot_url: str
    screenshot_error: str
    result: SignalResult
    profit_loss: str
    notes: str
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    screenshot_completed_at: _timestamp_pb2.Timestamp
    deliveries: _containers.RepeatedCompositeFieldContainer[NotificationDelivery]
    def __init__(self, signal_id: _Optional[str] = ..., user_id: _Optional[str] = ..., chart_id: _Optional[str] = ..., indicator: _Optional[str] = ..., ticker: _Optional[str] = ..., exchange: _Optional[str] = ..., symbol: _Optional[str] = ..., price: _Optional[str] = ..., signal_type: _Optional[str] = ..., interval: _Optional[str] = ..., alert_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., parse_status: _Optional[_Union[ParseStatus, str]] = ..., parse_problems: _Optional[_Iterable[str]] = ..., extra: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., raw_text: _Optional[str] = ..., content_type: _Optional[str] = ..., screenshot_status: _Optional[_Union[ScreenshotStatus, str]] = ..., screenshot_object_key: _Optional[str] = ..., screenshot_url: _Optional[str] = ..., screenshot_error: _Optional[str] = ..., result: _Optional[_Union[SignalResult, str]] = ..., profit_loss: _Optional[str] = ..., notes: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., screenshot_completed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., deliveries: _Optional[_Iterable[_Union[NotificationDelivery, _Mapping]]] = ...) -> None: ...

class TradingViewSession(_message.Message):
    __slots__ = ("configured", "valid", "checked_at", "changed_at", "checked")
    CONFIGURED_FIELD_NUMBER: _ClassVar[int]
    VALID_FIELD_NUMBER: _ClassVar[int]
    CHECKED_AT_FIELD_NUMBER: _ClassVar[int]
    CHANGED_AT_FIELD_NUMBER: _ClassVar[int]
    CHECKED_FIELD_NUMBER: _ClassVar[int]
    configured: bool
    valid: bool
    checked_at: _timestamp_pb2.Timestamp
    changed_at: _timestamp_pb2.Timestamp
    checked: bool
    def __init__(self, configured: _Optional[bool] = ..., valid: _Optional[bool] = ..., checked_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., changed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., checked: _Optional[bool] = ...) -> None: ...

class User(_message.Message):
    __slots__ = ("user_id", "external_id", "plan", "webhook_enabled", "default_chart_id", "ip_allowlist", "notification_preferences", "signals_quota", "signals_used", "quota_reset_at", "tradingview_session", "created_at", "updated_at")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_ID_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    WEBHOOK_ENABLED_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_CHART_ID_FIELD_NUMBER: _ClassVar[int]
    IP_ALLOWLIST_FIELD_NUMBER: _ClassVar[int]
    NOTIFICATION_PREFERENCES_FIELD_NUMBER: _ClassVar[int]
    SIGNALS_QUOTA_FIELD_NUMBER: _ClassVar[int]
    SIGNALS_USED_FIELD_NUMBER: _ClassVar[int]
    QUOTA_RESET_AT_FIELD_NUMBER: _ClassVar[int]
    TRADINGVIEW_SESSION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    external_id: str
    plan: Plan
    webhook_enabled: bool
    default_chart_id: str
    ip_allowlist: _containers.RepeatedScalarFieldContainer[str]
    notification_preferences: _struct_pb2.Struct
    signals_quota: int
    signals_used: int
    quota_reset_at: _timestamp_pb2.Timestamp
    tradingview_session: TradingViewSession
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, user_id: _Optional[str] = ..., external_id: _Optional[str] = ..., plan: _Optional[_Union[Plan, str]] = ..., webhook_enabled: _Optional[bool] = ..., default_chart_id: _Optional[str] = ..., ip_allowlist: _Optional[_Iterable[str]] = ..., notification_preferences: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., signals_quota: _Optional[int] = ..., signals_used: _Optional[int] = ..., quota_reset_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., tradingview_session: _Optional[_Union[TradingViewSession, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class UserStats(_message.Message):
    __slots__ = ("user_id", "total_signals", "this_month", "screenshots_pending", "win_rate", "wins", "losses", "storage_bytes", "storage_objects")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIGNALS_FIELD_NUMBER: _ClassVar[int]
    THIS_MONTH_FIELD_NUMBER: _ClassVar[int]
    SCREENSHOTS_PENDING_FIELD_NUMBER: _ClassVar[int]
    WIN_RATE_FIELD_NUMBER: _ClassVar[int]
    WINS_FIELD_NUMBER: _ClassVar[int]
    LOSSES_FIELD_NUMBER: _ClassVar[int]
    STORAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    STORAGE_OBJECTS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    total_signals: int
    this_month: int
    screenshots_pending: int
    win_rate: float
    wins: int
    losses: int
    storage_bytes: int
    storage_objects: int
    def __init__(self, user_id: _Optional[str] = ..., total_signals: _Optional[int] = ..., this_month: _Optional[int] = ..., screenshots_pending: _Optional[int] = ..., win_rate: _Optional[float] = ..., wins: _Optional[int] = ..., losses: _Optional[int] = ..., storage_bytes: _Optional[int] = ..., storage_objects: _Optional[int] = ...) -> None: ...

class SignalEvent(_message.Message):
    __slots__ = ("cursor", "type", "signal", "occurred_at", "tradingview_session", "user_id")
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    TRADINGVIEW_SESSION_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    cursor: str
    type: SignalEventType
    signal: Signal
    occurred_at: _timestamp_pb2.Timestamp
    tradingview_session: TradingViewSession
    user_id: str
    def __init__(self, cursor: _Optional[str] = ..., type: _Optional[_Union[SignalEventType, str]] = ..., signal: _Optional[_Union[Signal, _Mapping]] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., tradingview_session: _Optional[_Union[TradingViewSession, _Mapping]] = ..., user_id: _Optional[str] = ...) -> None: ...
