#include "bench/watch_counter.h"

#include <gtest/gtest.h>

#include <string>

namespace meridian::bench {
namespace {

TEST(WatchPayloadTest, RoundTripsAndPads) {
  std::string value;
  EncodeWatchPayload(0x1234, 987654321012345ULL, 64, &value);
  EXPECT_EQ(value.size(), 64u);
  const auto p = DecodeWatchPayload(value);
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->seq, 0x1234u);
  EXPECT_EQ(p->sent_ns, 987654321012345ULL);
  // Too small a size still gives a decodable payload.
  EncodeWatchPayload(7, 8, 1, &value);
  EXPECT_EQ(value.size(), kWatchPayloadMinBytes);
  ASSERT_TRUE(DecodeWatchPayload(value).has_value());
  EXPECT_EQ(DecodeWatchPayload(value)->seq, 7u);
}

TEST(WatchPayloadTest, RejectsForeignValues) {
  EXPECT_FALSE(DecodeWatchPayload("").has_value());
  EXPECT_FALSE(DecodeWatchPayload("hello").has_value());
  std::string value;
  EncodeWatchPayload(1, 2, 40, &value);
  value[5] = 'x';
  EXPECT_FALSE(DecodeWatchPayload(value).has_value());
  EncodeWatchPayload(1, 2, 40, &value);
  value[17] = 'U';
  EXPECT_FALSE(DecodeWatchPayload(value).has_value());
}

TEST(SequenceTrackerTest, InOrderDeliveryIsClean) {
  SequenceTracker t(1, 10);
  for (uint64_t s = 0; s < 10; ++s) EXPECT_TRUE(t.Observe(s));
  const WatchEventCounts c = t.Counts();
  EXPECT_EQ(c.distinct, 10u);
  EXPECT_EQ(c.lost, 0u);
  EXPECT_EQ(c.duplicated, 0u);
  EXPECT_EQ(c.out_of_order, 0u);
  EXPECT_EQ(c.unexpected, 0u);
}

TEST(SequenceTrackerTest, CountsLossDuplicationAndReorderExactly) {
  SequenceTracker lost(1, 10);
  for (uint64_t s = 0; s < 10; ++s) {
    if (s != 4) lost.Observe(s);
  }
  EXPECT_EQ(lost.Counts().lost, 1u);
  EXPECT_EQ(lost.Counts().out_of_order, 0u);
  EXPECT_EQ(lost.Counts().duplicated, 0u);

  SequenceTracker dup(1, 10);
  for (uint64_t s = 0; s < 10; ++s) {
    dup.Observe(s);
    if (s == 4) {
      EXPECT_FALSE(dup.Observe(s));
    }
  }
  EXPECT_EQ(dup.Counts().duplicated, 1u);
  EXPECT_EQ(dup.Counts().lost, 0u);
  EXPECT_EQ(dup.Counts().out_of_order, 0u);

  SequenceTracker reordered(1, 10);
  for (uint64_t s : {0, 1, 2, 3, 5, 4, 6, 7, 8, 9}) reordered.Observe(s);
  EXPECT_EQ(reordered.Counts().out_of_order, 1u);
  EXPECT_EQ(reordered.Counts().lost, 0u);
  EXPECT_EQ(reordered.Counts().duplicated, 0u);

  // A late duplicate is a duplicate, not a reordering.
  SequenceTracker late_dup(1, 10);
  for (uint64_t s : {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 2}) late_dup.Observe(s);
  EXPECT_EQ(late_dup.Counts().duplicated, 1u);
  EXPECT_EQ(late_dup.Counts().out_of_order, 0u);
}

// Putters interleave freely; only order within one putter matters.
TEST(SequenceTrackerTest, OrderIsPerSource) {
  SequenceTracker t(2, 6);  // source 0: 0,2,4  source 1: 1,3,5
  for (uint64_t s : {1, 3, 0, 5, 2, 4}) t.Observe(s);
  EXPECT_EQ(t.Counts().out_of_order, 0u);
  EXPECT_EQ(t.Counts().lost, 0u);
  SequenceTracker u(2, 6);
  for (uint64_t s : {0, 4, 2, 1, 3, 5}) u.Observe(s);
  EXPECT_EQ(u.Counts().out_of_order, 1u);  // 2 after 4
}

TEST(SequenceTrackerTest, OutOfRangeIsUnexpected) {
  SequenceTracker t(1, 3);
  t.Observe(0);
  t.Observe(99);
  t.ObserveUnexpected();
  const WatchEventCounts c = t.Counts();
  EXPECT_EQ(c.unexpected, 2u);
  EXPECT_EQ(c.received, 3u);
  EXPECT_EQ(c.lost, 2u);
}

etcdserverpb::WatchResponse Created(int64_t id) {
  etcdserverpb::WatchResponse r;
  r.set_watch_id(id);
  r.set_created(true);
  return r;
}

etcdserverpb::WatchResponse Events(int64_t id, std::initializer_list<uint64_t> seqs,
                                   uint64_t sent_ns) {
  etcdserverpb::WatchResponse r;
  r.set_watch_id(id);
  for (uint64_t s : seqs) {
    mvccpb::Event* e = r.add_events();
    e->set_type(mvccpb::Event::PUT);
    EncodeWatchPayload(s, sent_ns, 40, e->mutable_kv()->mutable_value());
  }
  return r;
}

TEST(WatcherSetTest, MapsCreatedIdsInOrderAndRecordsDelivery) {
  WatcherSet set(2, true, 1, 3);
  LatencyHistogram delivery;
  WatcherSet::ResponseResult r;
  ASSERT_TRUE(set.OnResponse(Created(7), 0, &delivery, &r).ok());
  ASSERT_TRUE(set.OnResponse(Created(9), 0, &delivery, &r).ok());
  EXPECT_EQ(r.newly_created, 2u);
  EXPECT_TRUE(set.all_created());
  r = {};
  ASSERT_TRUE(set.OnResponse(Events(7, {0, 1, 2}, 1000), 3000, &delivery, &r).ok());
  EXPECT_EQ(r.events, 3u);
  EXPECT_EQ(r.new_distinct, 3u);
  ASSERT_TRUE(set.OnResponse(Events(9, {0, 2}, 1000), 3000, &delivery, &r).ok());
  EXPECT_EQ(delivery.count(), 5u);
  EXPECT_EQ(delivery.max_ns(), 2000u);
  const WatchEventCounts c = set.Counts();
  EXPECT_EQ(c.expected, 6u);
  EXPECT_EQ(c.lost, 1u);  // watcher 9 never saw seq 1
}

TEST(WatcherSetTest, ReportsUnknownIdsAndCancels) {
  WatcherSet set(1, true, 1, 2);
  WatcherSet::ResponseResult r;
  EXPECT_FALSE(set.OnResponse(Events(5, {0}, 0), 0, nullptr, &r).ok());
  EXPECT_EQ(set.Counts().unexpected, 1u);
  ASSERT_TRUE(set.OnResponse(Created(5), 0, nullptr, &r).ok());
  EXPECT_FALSE(set.OnResponse(Created(6), 0, nullptr, &r).ok());  // one create was sent
  etcdserverpb::WatchResponse cancel;
  cancel.set_watch_id(5);
  cancel.set_canceled(true);
  r = {};
  EXPECT_FALSE(set.OnResponse(cancel, 0, nullptr, &r).ok());
  EXPECT_TRUE(r.canceled);
}

TEST(WatcherSetTest, UntrackedCountsEvents) {
  WatcherSet set(1, false, 1, 0);
  WatcherSet::ResponseResult r;
  ASSERT_TRUE(set.OnResponse(Created(0), 0, nullptr, &r).ok());
  etcdserverpb::WatchResponse resp;
  resp.set_watch_id(0);
  resp.add_events()->mutable_kv()->set_value("anything");
  resp.add_events()->mutable_kv()->set_value("else");
  ASSERT_TRUE(set.OnResponse(resp, 0, nullptr, &r).ok());
  EXPECT_EQ(set.Counts().received, 2u);
  EXPECT_EQ(set.Counts().lost, 0u);
}

}  // namespace
}  // namespace meridian::bench
