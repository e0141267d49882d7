"""AmiEvent: the channel variables of every channel snapshot an event carries, bounded like the rest."""

from __future__ import annotations

import logging

from ivr.asterisk.ami import AmiParser, Message
from queues.events import ID_LENGTH, AmiEvent

# An AttendedTransfer as main/stasis_bridges.c writes it (shortened to the headers that matter here):
# every channel snapshot has its prefix, its ChanVariable lines too.
ATTENDED = (
    b"Event: AttendedTransfer\r\nPrivilege: call,all\r\nResult: Success\r\n"
    b"OrigTransfererChannel: PJSIP/1001-00000002\r\nOrigTransfererUniqueid: 1.3\r\n"
    b"OrigTransfererChanVariable: IVR_CALL_ID=\r\n"
    b"SecondTransfererChannel: PJSIP/1001-00000004\r\nSecondTransfererUniqueid: 1.5\r\n"
    b"TransfereeChannel: PJSIP/trunk-00000001\r\nTransfereeUniqueid: 1.1\r\n"
    b"TransfereeChanVariable: IVR_CALL_ID=call-7\r\nTransfereeChanVariable: IVR_SEGMENT=B\r\n"
    b"TransferTargetChannel: PJSIP/1002-00000005\r\nTransferTargetChanVariable: IVR_CALL_ID=\r\n"
    b"IsExternal: No\r\nDestType: Bridge\r\nDestBridgeUniqueid: b-1\r\n\r\n"
)


def parsed(data: bytes) -> AmiEvent:
    (message,) = [m for m in AmiParser().feed(data) if isinstance(m, Message)]
    return AmiEvent.from_headers(message.headers)


def test_each_snapshots_variables_are_read_under_its_prefix():
    event = parsed(ATTENDED)
    assert event.party("Transferee") == {"IVR_CALL_ID": "call-7", "IVR_SEGMENT": "B"}
    assert event.party("transferee") is event.party_variables["transferee"]  # any case
    assert event.party("OrigTransferer") == {} and event.party("TransferTarget") == {}  # empty values left out
    assert event.party("Nobody") == {}
    assert event.variables == {} and event.dest_variables == {}  # no plain ChanVariable lines here
    assert event.header("TransfereeUniqueid") == "1.1" and event.header("DestType") == "Bridge"


def test_the_mapping_form_reads_prefixed_variables_the_same_way():
    event = AmiEvent.of({"Event": "BlindTransfer", "TransfereeChanVariable": {"IVR_CALL_ID": "call-8"},
                         "TransfererChanVariable": ["IVR_CALL_ID=", "X=1"], "ChanVariable": {"A": "b"}})
    assert event.party("Transferee") == {"IVR_CALL_ID": "call-8"}
    assert event.party("Transferer") == {"X": "1"}
    assert event.variables == {"A": "b"}


def test_a_call_id_or_uniqueid_too_long_for_the_record_reads_as_absent(caplog):
    long_id = "x" * (ID_LENGTH + 1)
    with caplog.at_level(logging.WARNING, logger="queues.events"):
        event = AmiEvent.of({"Event": "BlindTransfer", "TransfereeUniqueid": long_id,
                             "TransfereeChanVariable": {"IVR_CALL_ID": long_id, "IVR_SEGMENT": "A"}})
    assert event.header("TransfereeUniqueid") is None
    assert event.party("Transferee") == {"IVR_SEGMENT": "A"}
    assert "TransfereeUniqueid" in caplog.text and "IVR_CALL_ID" in caplog.text

