"""Messages on the topics. Every message has a deterministic id and an event time;
scored messages also name the model (and version) that produced them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.cars import CarFeatures
from schemas.explanations import Explanation
from schemas.text import MAX_ID, Label

MAX_ABS_DELAY_MINUTES = 525_600  # one year: anything beyond is a broken record
MAX_PLANNED_GAP_MINUTES = 720  # the history only links rentals planned < 12 h apart
MAX_PRICE_PER_DAY = 10_000.0  # euros; the pricing data tops out near 400
MAX_MESSAGE_BYTES = 65_536  # a valid event is under 2 kB; anything this large is refused unread
MAX_DEAD_LETTER_RAW_BYTES = 65_536

CheckinType = Literal["mobile", "connect"]
RentalState = Literal["ended", "canceled"]
DriftState = Literal["drifting", "recovered"]
Arm = Literal["champion", "challenger"]


def utc_now() -> datetime:
    return datetime.now(UTC)


class RentalEvent(BaseModel):
    """One rental, as in a row of the delay history, with the profile of its car."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    rental_id: int = Field(gt=0, le=MAX_ID)
    car_id: int = Field(gt=0, le=MAX_ID)
    checkin_type: CheckinType
    state: RentalState
    delay_at_checkout_minutes: int | None = Field(
        None,
        ge=-MAX_ABS_DELAY_MINUTES,
        le=MAX_ABS_DELAY_MINUTES,
        description="Checkout time minus planned end; negative = returned early.",
    )
    previous_ended_rental_id: int | None = Field(None, gt=0, le=MAX_ID)
    planned_gap_minutes: int | None = Field(
        None,
        ge=0,
        le=MAX_PLANNED_GAP_MINUTES,
        description="Planned start of this rental minus planned end of the previous one.",
    )
    car: CarFeatures
    event_time: datetime = Field(default_factory=utc_now)

    @model_validator(mode="after")
    def _previous_rental_needs_gap(self) -> RentalEvent:
        if (self.previous_ended_rental_id is None) != (self.planned_gap_minutes is None):
            raise ValueError("previous_ended_rental_id and planned_gap_minutes go together")
        if self.previous_ended_rental_id == self.rental_id:
            raise ValueError("a rental cannot follow itself")
        return self


class PriceRequest(BaseModel):
    """A request to price one car; the reply goes to ``reply_to`` when set.

    ``event_time`` is when the request was made, so the request log can tell how long
    the answer took; ``client`` says who asked (the bridge records the caller there).
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    request_id: Label = Field(min_length=1, max_length=128)
    car: CarFeatures
    reply_to: Label | None = Field(None, min_length=1, max_length=249)
    client: Label | None = Field(None, max_length=128)
    listed_price_per_day: float | None = Field(
        None,
        gt=0,
        le=MAX_PRICE_PER_DAY,
        description="The price the car is really listed at, when known (the simulator's "
        "listings): the monitor tracks the model's error against it.",
    )
    explain: bool = Field(
        False, description="Also explain the price (its feature contributions): ~10 ms more of the scorer's time."
    )
    answer_with: Arm = Field(
        "champion",
        description="Whose price the requester is answered with: the challenger's when a challenger is set and "
        "priced the car (the bridge's live split), else the champion's. Both are stored either way.",
    )
    event_time: datetime = Field(default_factory=utc_now)


class PriceScored(BaseModel):
    # Read back by the monitor and the dashboard: no NaN or infinity, and text and ids that
    # fit the tables' columns.
    model_config = ConfigDict(allow_inf_nan=False)

    price_id: Label = Field(max_length=160, description="'rental-<rental_id>' or the request id")
    rental_id: int | None = Field(None, gt=0, le=MAX_ID)
    request_id: Label | None = Field(None, max_length=128)
    car_id: int | None = Field(None, gt=0, le=MAX_ID)
    price_per_day: float
    price_lower: float | None = Field(
        None,
        description="Low end of the model's calibrated interval (80%: see schemas.intervals); "
        "None for a model version trained without one.",
    )
    price_upper: float | None = Field(None, description="High end of the same interval.")
    estimated_error: float | None = Field(
        None,
        ge=0,
        description="The absolute error in euros the version's error estimator expects of this price, before "
        "any true price is known (schemas.error_estimates); None for a version trained without one.",
    )
    listed_price_per_day: float | None = Field(None, description="The real price, when the request carried it.")
    unknown_fields: list[str] = Field(default_factory=list)
    model_name: Label = Field(max_length=128)
    model_version: Label = Field(max_length=32)
    challenger_model_version: Label | None = Field(
        None, max_length=32, description="The challenger that also priced this car, when a challenger alias exists."
    )
    challenger_price_per_day: float | None = Field(
        None, description="The challenger's price (None without a challenger, or where it failed)."
    )
    challenger_price_lower: float | None = Field(None, description="Low end of the challenger's interval.")
    challenger_price_upper: float | None = Field(None, description="High end of the challenger's interval.")
    challenger_estimated_error: float | None = Field(
        None, ge=0, description="The absolute error the challenger's error estimator expects of its price."
    )
    answered_with_version: Label | None = Field(
        None,
        max_length=32,
        description="The version whose price a price request was answered with: the challenger's for a "
        "requester in the live split (when it priced the car), else the champion's; None for a rental.",
    )
    explanation: Explanation | None = Field(
        None, description="Why this price, when the request asked (explain) and the scorer could work it out."
    )
    event_time: datetime
    scored_at: datetime

    def answer(self) -> Answer:
        """What the requester of this price is answered with: the challenger's price,
        interval, estimated error and version when it was answered with the challenger's
        version (the live split), else the champion's."""
        challenger = self.challenger_model_version
        if (
            self.answered_with_version is not None
            and self.answered_with_version == challenger != self.model_version
            and self.challenger_price_per_day is not None
        ):
            return Answer(
                self.challenger_price_per_day,
                self.challenger_price_lower,
                self.challenger_price_upper,
                self.answered_with_version,
                self.challenger_estimated_error,
            )
        return Answer(self.price_per_day, self.price_lower, self.price_upper, self.model_version, self.estimated_error)


class Answer(NamedTuple):
    """A price as its requester gets it (``PriceScored.answer``)."""

    price_per_day: float
    price_lower: float | None
    price_upper: float | None
    model_version: str
    estimated_error: float | None


class DelayScored(BaseModel):
    """The delay facts of one rental and, when known, its knock-on on the next driver.

    Bounded as the rentals they come from, so a message read back (by the monitor) cannot
    carry an id PostgreSQL cannot store or a number its statistics cannot take."""

    rental_id: int = Field(gt=0, le=MAX_ID)
    car_id: int = Field(gt=0, le=MAX_ID)
    checkin_type: CheckinType
    state: RentalState
    delay_at_checkout_minutes: int | None = Field(ge=-MAX_ABS_DELAY_MINUTES, le=MAX_ABS_DELAY_MINUTES)
    is_late: bool | None = Field(description="Returned after the planned end (delay > 0).")
    previous_ended_rental_id: int | None = Field(gt=0, le=MAX_ID)
    planned_gap_minutes: int | None = Field(ge=0, le=MAX_PLANNED_GAP_MINUTES)
    previous_delay_minutes: int | None = Field(
        ge=-MAX_ABS_DELAY_MINUTES,
        le=MAX_ABS_DELAY_MINUTES,
        description="Delay of the previous rental of the car, once both are known.",
    )
    waiting_minutes: int | None = Field(
        ge=-MAX_ABS_DELAY_MINUTES - MAX_PLANNED_GAP_MINUTES,
        le=MAX_ABS_DELAY_MINUTES,
        description="previous delay - planned gap: how long this driver waited if > 0.",
    )
    is_conflict: bool | None = Field(description="The previous rental made this driver wait.")
    event_time: datetime
    scored_at: datetime


class DeadLetter(BaseModel):
    model_config = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")

    dead_letter_id: str = Field(description="'<topic>/<partition>/<offset>/<consumer>'")
    topic: str
    partition: int
    offset: int
    key: str | None
    raw_value: bytes = Field(description="The message bytes exactly as consumed (base64 in JSON).")
    raw_size: int = Field(0, ge=0, description="Bytes of the message as consumed.")
    raw_truncated: bool = Field(
        False,
        description="On the topic, raw_value holds only the first MAX_DEAD_LETTER_RAW_BYTES bytes of a "
        "larger message (the dead_letters table keeps them all).",
    )
    reason: str
    consumer: str
    received_at: datetime

    def on_topic(self) -> DeadLetter:
        """The letter as published on ``dead-letters``: a poison message of any size must
        not make its own dead letter too large for the broker."""
        if len(self.raw_value) <= MAX_DEAD_LETTER_RAW_BYTES:
            return self
        return self.model_copy(update={"raw_value": self.raw_value[:MAX_DEAD_LETTER_RAW_BYTES], "raw_truncated": True})


class WindowStats(BaseModel):
    """Count, mean and standard deviation of a signal's values over a window."""

    n: int = Field(ge=0)
    mean: float
    std: float = Field(ge=0)


class DriftAlert(BaseModel):
    """A monitored signal started drifting, or came back. One alert per change of state,
    never one per event while the drift lasts. Keyed on `drift` by ``signal``."""

    alert_id: str = Field(description="'<signal>@<topic>/<partition>/<offset>' of the event that set it off")
    signal: str = Field(description="'<stream>/<feature>', e.g. 'rentals/mileage', 'rentals/fuel=diesel'")
    detector: str = Field(description="The detector and its setting, e.g. 'ADWIN(delta=0.002)'")
    state: DriftState
    before: WindowStats = Field(description="The values before the change (the part the detector let go)")
    after: WindowStats = Field(description="The values since the change")
    reference: WindowStats | None = Field(description="What the signal looked like in the model's reference data")
    events_seen: int = Field(description="Values of this signal the monitor had seen when it fired")
    triggered_by: str = Field(description="Id of the event that set it off (rental id or price id)")
    model_name: str | None
    model_version: str | None = Field(description="The model in production, as the last price scored says")
    event_time: datetime = Field(description="Event time of the event that set it off")
    detected_at: datetime
