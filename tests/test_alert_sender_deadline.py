"""The alert sender's delivery deadline at its edges (issue 18): a receiver that never accepts the
connection, a deadline reached to the instant, a socket timeout that beats the deadline's timer,
a timer that fires after the delivery ended, a delivery in flight that must not hold its process open,
and a sender that serves again after it was stopped. Real servers on 127.0.0.1 throughout."""
import socket
import threading

import pytest
from freezegun import freeze_time

from hoc_drivers.alert_sender import AlertDelivery, AlertSender, DeliveryResult, SmtpSettings, _Deadline
from tests.test_alert_sender import HTTP_OK, T0, TrickleReceiver
from tests.test_alert_sender_edges import email, queue_webhooks, webhook

TIMED_OUT = ("Timeout: timed out", "delivery deadline of 0.3 s passed")  # the socket's or the timer's


def alert_to(channel, port):
    """A webhook or e-mail alert whose receiver listens on 127.0.0.1:`port`."""
    return webhook(f"http://127.0.0.1:{port}/") if channel == "webhook" else email("ops@example.com")


def delivery_to(port):
    """A delivery with a 0.3 s deadline, whose SMTP server is 127.0.0.1:`port`."""
    return AlertDelivery(timeout=0.3, smtp=SmtpSettings(host="127.0.0.1", port=port))


@pytest.mark.parametrize("channel", ["webhook", "email"])
def test_a_receiver_that_never_accepts_the_connection_holds_a_delivery_no_longer_than_its_deadline(channel):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    queued = socket.create_connection(("127.0.0.1", port))  # fills the accept queue: later SYNs are dropped
    results = []
    try:
        attempt = threading.Thread(target=lambda: results.append(delivery_to(port).deliver(alert_to(channel, port))),
                                   daemon=True)
        attempt.start()
        attempt.join(15)  # the connect alone would wait for the system's SYN retries (about 2 min)
    finally:
        queued.close()
        listener.close()
    (result,) = results
    assert (result.success, result.error_type, result.permanent) == (False, "timeout", False)
    assert result.error_message in TIMED_OUT


@pytest.mark.parametrize("channel", ["webhook", "email"])
def test_a_delivery_ended_by_its_deadline_is_exactly_a_failed_timeout(channel):
    http = channel == "webhook"
    with TrickleReceiver(HTTP_OK if http else b"220 trickle SMTP ready\r\n", http=http) as trickle:
        result = delivery_to(trickle.server_address[1]).deliver(alert_to(channel, trickle.server_address[1]))
    assert result == DeliveryResult(False, "timeout", "delivery deadline of 0.3 s passed")


def test_a_deadline_reached_to_the_instant_opens_no_connection():
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    try:
        with freeze_time(T0) as clock:
            deadline = _Deadline(5)
            clock.tick(5)  # not a moment of the deadline is left
            with pytest.raises(TimeoutError, match="^delivery deadline passed$"):
                deadline.connect(listener.getsockname())
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody knocked
    finally:
        listener.close()


def test_a_reply_timeout_that_beats_the_deadlines_timer_is_still_a_failed_attempt():
    """The socket's own timeout ends with the deadline; when the timer runs late (a busy machine),
    the socket's timeout ends the delivery, and the alert must not count as sent."""
    silent = socket.create_server(("127.0.0.1", 0))  # accepts (in its backlog), never answers
    try:
        with _Deadline(30) as late_timer:
            url = f"http://127.0.0.1:{silent.getsockname()[1]}/"
            result = AlertDelivery(timeout=0.2)._post(url, b"{}", {}, late_timer)
    finally:
        silent.close()
    assert result == DeliveryResult(False, "timeout", "Timeout: timed out")


def test_a_deadline_timer_that_fires_after_the_delivery_ended_changes_nothing():
    with TrickleReceiver(b"", http=False) as receiver:
        with _Deadline(30) as deadline:
            deadline.connect(receiver.server_address).close()
    deadline._expire()  # the timer's call, had cancel() come a moment too late
    assert not deadline.expired  # a failure of that delivery keeps its own error


def test_a_delivery_in_flight_never_holds_its_process_open():
    """Python waits at exit for each non-daemon thread: a delivery in flight (here from an
    application's daemon thread) starts none, so the application exits without waiting out the
    deadline."""
    silent = socket.create_server(("127.0.0.1", 0))
    silent.settimeout(15)
    before = {thread for thread in threading.enumerate() if not thread.daemon}
    url = f"http://127.0.0.1:{silent.getsockname()[1]}/"
    in_flight = threading.Thread(target=AlertDelivery(timeout=120).deliver, args=(webhook(url),), daemon=True)
    in_flight.start()
    held, _ = silent.accept()
    try:
        held.recv(1)  # the request is on its way; the delivery waits for a reply
        assert {thread for thread in threading.enumerate() if not thread.daemon} == before
    finally:
        held.close()  # the delivery ends: the receiver hung up
        silent.close()
        in_flight.join(15)


def test_a_stopped_sender_serves_again(hoc_coordinator, receiver):
    sender = AlertSender(hoc_coordinator, clock=lambda: T0)
    sender.stop()  # before serve(): it returns at once
    assert sender.serve()["processed"] == 0
    queue_webhooks(hoc_coordinator, receiver.url)
    assert sender.serve(on_batch=lambda counts: sender.stop())["sent"] == 1
    assert len(receiver.requests) == 1
