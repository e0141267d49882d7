"""The channel variables the call path sets and the dialplan and the AMI events carry.

One name per idea, defined here once: `ivr.call.inbound` sets them with ``SET
VARIABLE``, ``asterisk_conf/extensions.conf`` reads them, and the AMI events of a
queued call bring back the ones named in ``manager.conf``'s ``channelvars``
(`EVENT_VARIABLES`) as ``ChanVariable: NAME=value`` lines.
"""

from __future__ import annotations

CALL_ID = "IVR_CALL_ID"  # the server's id of the call: the key of its context and record
CUSTOMER_ID = "IVR_CUSTOMER_ID"  # the CRM customer the caller was identified as
SEGMENT = "IVR_SEGMENT"  # the customer's segment, for statistics per segment
INTENT = "IVR_INTENT"  # the predicted (or confirmed) reason of the call
QUEUE = "IVR_QUEUE"  # the queue to join; set last, so the dialplan reads it as "routed"
PRIORITY = "QUEUE_PRIO"  # app_queue's own variable: higher is served first
ANNOUNCE = "IVR_ANNOUNCE"  # a sound file played before queueing
MANAGER = "IVR_MANAGER"  # the personal manager's dial string, rung before the queue
MANAGER_TIMEOUT = "IVR_MANAGER_TIMEOUT"  # seconds to ring the manager
CONTAINED = "IVR_CONTAINED"  # "1": self-service answered the caller; no queue
SURVEY = "IVR_SURVEY"  # the line's post-call survey (csat, nps, both); empty: the dialplan skips the survey AGI

# What manager.conf's channelvars must list for the agent side to work: MANAGER tells the call
# record which Dial was the personal manager's (ivr.agents.callcenter).
EVENT_VARIABLES = (CALL_ID, CUSTOMER_ID, SEGMENT, MANAGER)
