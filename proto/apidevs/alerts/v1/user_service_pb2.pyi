import datetime

from apidevs.alerts.v1 import resources_pb2 as _resources_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CreateUserRequest(_message.Message):
    __slots__ = ("external_id", "plan", "default_chart_id", "signals_quota", "ip_allowlist", "notification_preferences")
    EXTERNAL_ID_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_CHART_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNALS_QUOTA_FIELD_NUMBER: _ClassVar[int]
    IP_ALLOWLIST_FIELD_NUMBER: _ClassVar[int]
    NOTIFICATION_PREFERENCES_FIELD_NUMBER: _ClassVar[int]
    external_id: str
    plan: _resources_pb2.Plan
    default_chart_id: str
    signals_quota: int
    ip_allowlist: _containers.RepeatedScalarFieldContainer[str]
    notification_preferences: _struct_pb2.Struct
    def __init__(self, external_id: _Optional[str] = ..., plan: _Optional[_Union[_resources_pb2.Plan, str]] = ..., default_chart_id: _Optional[str] = ..., signals_quota: _Optional[int] = ..., ip_allowlist: _Optional[_Iterable[str]] = ..., notification_preferences: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class CreateUserResponse(_message.Message):
    __slots__ = ("user", "webhook_token", "webhook_url")
    USER_FIELD_NUMBER: _ClassVar[int]
    WEBHOOK_TOKEN_FIELD_NUMBER: _ClassVar[int]
    WEBHOOK_URL_FIELD_NUMBER: _ClassVar[int]
    user: _resources_pb2.User
    webhook_token: str
    webhook_url: str
    def __init__(self, user: _Optional[_Union[_resources_pb2.User, _Mapping]] = ..., webhook_token: _Optional[str] = ..., webhook_url: _Optional[str] = ...) -> None: ...

class GetUserRequest(_message.Message):
    __slots__ = ("user_id", "external_id")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    external_id: str
    def __init__(self, user_id: _Optional[str] = ..., external_id: _Optional[str] = ...) -> None: ...

class UpdateUserRequest(_message.Message):
    __slots__ = ("user", "update_mask")
    USER_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    user: _resources_pb2.User
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, user: _Optional[_Union[_resources_pb2.User, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class RotateWebhookTokenRequest(_message.Message):
    __slots__ = ("user_id", "grace_period_seconds")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    GRACE_PERIOD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    grace_period_seconds: int
    def __init__(self, user_id: _Optional[str] = ..., grace_period_seconds: _Optional[int] = ...) -> None: ...

class RotateWebhookTokenResponse(_message.Message):
    __slots__ = ("webhook_token", "webhook_url", "previous_token_expires_at")
    WEBHOOK_TOKEN_FIELD_NUMBER: _ClassVar[int]
    WEBHOOK_URL_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_TOKEN_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    webhook_token: str
    webhook_url: str
    previous_token_expires_at: _timestamp_pb2.Timestamp
    def __init__(self, webhook_token: _Optional[str] = ..., webhook_url: _Optional[str] = ..., previous_token_expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SetTradingViewSessionRequest(_message.Message):
    __slots__ = ("user_id", "sessionid", "sessionid_sign")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    SESSIONID_FIELD_NUMBER: _ClassVar[int]
    SESSIONID_SIGN_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    sessionid: str
    sessionid_sign: str
    def __init__(self, user_id: _Optional[str] = ..., sessionid: _Optional[str] = ..., sessionid_sign: _Optional[str] = ...) -> None: ...
