"""Faust's aiokafka transport, with one fix: no record is skipped at a group's first start.

During recovery Faust resumes fetching before it positions the stream partitions;
records fetched then are dropped, and its final `seek_to_committed` moves only the
partitions that have a committed offset above zero. A partition with no commit keeps
the advanced position, so events produced in those moments were never processed (seen
on the broker: a new worker group lost the event written while it recovered). Here a
stream partition without a committed offset is set back to its beginning, which is what
`auto_offset_reset=earliest` promises.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import faust
from faust.transport.drivers import aiokafka as driver


class _ConsumerThread(driver.AIOKafkaConsumerThread):
    async def seek_to_committed(self) -> Mapping[Any, int]:
        committed: Mapping[Any, int] = await super().seek_to_committed()
        changelogs = self.app.tables.changelog_topics
        uncommitted = [
            tp for tp, offset in committed.items() if not offset and tp.topic not in changelogs
        ]
        if uncommitted:
            consumer = self._ensure_consumer()
            await self.call_thread(consumer.seek_to_beginning, *uncommitted)
        return committed


class _Consumer(driver.Consumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(driver.Transport):
    Consumer = _Consumer


class App(faust.App):
    """`faust.App` on the fixed transport."""

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self, loop=self.loop)
