// Watch hub: ordering, no gaps, no duplicates, catch-up from history, slow streams, compaction,
// filters, progress and fragments.
#include "common/temp_dir.h"
#include "node/mvcc/watch_hub.h"

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <thread>

namespace meridian::mvcc {
namespace {

// Records responses; the test decides when a write "completes".
class FakeSink : public WatchStream::Sink {
 public:
  void Write(const etcdserverpb::WatchResponse* msg, bool /*more*/) override {
    std::lock_guard<std::mutex> lock(mu);
    pending = *msg;
    has_pending = true;
  }
  // Completes writes until the stream has nothing more to send (or `max` writes).
  void Drain(WatchStream* stream, size_t max = SIZE_MAX) {
    for (size_t i = 0; i < max; ++i) {
      {
        std::lock_guard<std::mutex> lock(mu);
        if (!has_pending) return;
        got.push_back(pending);
        has_pending = false;
      }
      stream->OnWriteDone();
    }
  }
  std::mutex mu;
  etcdserverpb::WatchResponse pending;
  bool has_pending = false;
  std::vector<etcdserverpb::WatchResponse> got;
};

class WatchHubTest : public ::testing::Test {
 protected:
  void SetUp() override {
    StoreOptions o;
    o.dir = dir_.path();
    store_ = std::move(*Store::Open(o));
  }
  void MakeHub(size_t queue_responses = 4096, size_t queue_bytes = 8u << 20) {
    WatchHubOptions wo;
    wo.stream_queue_responses_max = queue_responses;
    wo.stream_queue_bytes_max = queue_bytes;
    wo.fragment_bytes = 200;
    wo.fill_header = [](etcdserverpb::ResponseHeader* h, int64_t rev) { h->set_revision(rev); };
    hub_ = std::make_unique<WatchHub>(store_.get(), wo);
  }
  void TearDown() override {
    hub_.reset();
    store_.reset();
  }
  void Put(const std::string& k, const std::string& v) {
    ApplyBatch b(store_.get());
    auto t = b.BeginTxn();
    ASSERT_TRUE(t.Put(k, v, 0).ok());
    t.End();
    ASSERT_TRUE(b.Commit().ok());
    hub_->Notify(b.events(), b.rev());
  }
  void Delete(const std::string& k) {
    ApplyBatch b(store_.get());
    auto t = b.BeginTxn();
    ASSERT_TRUE(t.DeleteRange(k, "").ok());
    t.End();
    ASSERT_TRUE(b.Commit().ok());
    hub_->Notify(b.events(), b.rev());
  }
  etcdserverpb::WatchCreateRequest Req(const std::string& key, int64_t start = 0) {
    etcdserverpb::WatchCreateRequest r;
    r.set_key(key);
    r.set_start_revision(start);
    return r;
  }
  // Waits (bounded) until the sink has at least n events for watch `id` in total.
  std::vector<mvccpb::Event> EventsFor(FakeSink& sink, WatchStream* s, int64_t id, size_t n) {
    std::vector<mvccpb::Event> out;
    for (int i = 0; i < 500; ++i) {
      sink.Drain(s);
      out.clear();
      for (const auto& r : sink.got) {
        if (r.watch_id() != id) continue;
        for (const auto& e : r.events()) out.push_back(e);
      }
      if (out.size() >= n) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return out;
  }
  TempDir dir_{"watchhub"};
  std::unique_ptr<Store> store_;
  std::unique_ptr<WatchHub> hub_;
};

TEST_F(WatchHubTest, LiveEventsInOrder) {
  MakeHub();
  FakeSink sink;
  auto s = hub_->NewStream(&sink);
  hub_->Create(s, Req("k"));
  sink.Drain(s.get());
  ASSERT_EQ(sink.got.size(), 1u);
  EXPECT_TRUE(sink.got[0].created());
  EXPECT_EQ(sink.got[0].watch_id(), 0);
  for (int i = 0; i < 10; ++i) Put(i % 2 ? "k" : "other", std::to_string(i));
  Delete("k");
  auto evs = EventsFor(sink, s.get(), 0, 6);
  ASSERT_EQ(evs.size(), 6u);
  for (size_t i = 0; i + 1 < evs.size(); ++i) {
    EXPECT_LT(evs[i].kv().mod_revision(), evs[i + 1].kv().mod_revision());
  }
  EXPECT_EQ(evs.back().type(), mvccpb::Event::DELETE);
  EXPECT_FALSE(evs.back().has_prev_kv());  // not asked for
  hub_->CloseStream(s);
}

TEST_F(WatchHubTest, CatchUpFromHistoryThenLiveWithoutGapOrDuplicate) {
  MakeHub();
  for (int i = 0; i < 50; ++i) Put("k", std::to_string(i));  // revisions 2..51
  FakeSink sink;
  auto s = hub_->NewStream(&sink);
  auto req = Req("k", 10);
  req.set_prev_kv(true);
  hub_->Create(s, req);
  // Keep writing while it catches up.
  std::thread writer([&] {
    for (int i = 50; i < 100; ++i) Put("k", std::to_string(i));
  });
  auto evs = EventsFor(sink, s.get(), 0, 92);
  writer.join();
  evs = EventsFor(sink, s.get(), 0, 92);
  ASSERT_EQ(evs.size(), 92u);  // revisions 10..101
  for (size_t i = 0; i < evs.size(); ++i) {
    EXPECT_EQ(evs[i].kv().mod_revision(), static_cast<int64_t>(10 + i));
    EXPECT_EQ(evs[i].prev_kv().mod_revision(), static_cast<int64_t>(9 + i));
  }
  hub_->CloseStream(s);
}

TEST_F(WatchHubTest, SlowStreamIsMovedOutAndCatchesUp) {
  // Backed-up responses of one watcher are merged, so the byte bound is what fills up.
  MakeHub(/*queue_responses=*/4, /*queue_bytes=*/300);
  FakeSink slow, fast;
  auto ss = hub_->NewStream(&slow);
  auto fs = hub_->NewStream(&fast);
  hub_->Create(ss, Req("k"));
  hub_->Create(fs, Req("k"));
  fast.Drain(fs.get());
  for (int i = 0; i < 100; ++i) {
    Put("k", std::to_string(i));
    fast.Drain(fs.get());  // the fast client keeps up; the slow one reads nothing
  }
  EXPECT_GE(hub_->unsynced_count(), 1u);
  EXPECT_EQ(EventsFor(fast, fs.get(), 0, 100).size(), 100u);
  auto evs = EventsFor(slow, ss.get(), 0, 100);
  ASSERT_EQ(evs.size(), 100u);
  for (size_t i = 0; i < evs.size(); ++i) {
    EXPECT_EQ(evs[i].kv().mod_revision(), static_cast<int64_t>(2 + i));
  }
  hub_->CloseStream(ss);
  hub_->CloseStream(fs);
}

TEST_F(WatchHubTest, BehindCompactionIsToldAndCanceled) {
  MakeHub();
  for (int i = 0; i < 10; ++i) Put("k", std::to_string(i));
  {
    ApplyBatch b(store_.get());
    ASSERT_TRUE(b.Compact(8).ok());
    ASSERT_TRUE(b.Commit().ok());
  }
  FakeSink sink;
  auto s = hub_->NewStream(&sink);
  hub_->Create(s, Req("k", 3));
  for (int i = 0; i < 200 && sink.got.size() < 2; ++i) {
    sink.Drain(s.get());
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_EQ(sink.got.size(), 2u);
  EXPECT_EQ(sink.got[1].compact_revision(), 8);
  EXPECT_TRUE(sink.got[1].canceled());
  EXPECT_EQ(hub_->watcher_count(), 0u);
  hub_->CloseStream(s);
}

TEST_F(WatchHubTest, IdsFiltersCancelAndProgress) {
  MakeHub();
  FakeSink sink;
  auto s = hub_->NewStream(&sink);
  auto r = Req("a");
  r.set_range_end("b");
  r.set_watch_id(7);
  r.add_filters(etcdserverpb::WatchCreateRequest::NOPUT);
  hub_->Create(s, r);
  hub_->Create(s, r);  // duplicate id
  auto bad = Req("b");
  bad.set_range_end("a");
  hub_->Create(s, bad);  // empty range
  sink.Drain(s.get());
  ASSERT_EQ(sink.got.size(), 3u);
  EXPECT_EQ(sink.got[0].watch_id(), 7);
  EXPECT_FALSE(sink.got[0].canceled());
  EXPECT_TRUE(sink.got[1].canceled());
  EXPECT_EQ(sink.got[1].cancel_reason(), "mvcc: duplicate watch ID provided on the WatchStream");
  EXPECT_EQ(sink.got[2].cancel_reason(), "mvcc: watcher range is empty");
  Put("a1", "x");
  Delete("a1");
  auto evs = EventsFor(sink, s.get(), 7, 1);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].type(), mvccpb::Event::DELETE);
  hub_->RequestProgress(s);
  sink.Drain(s.get());
  EXPECT_EQ(sink.got.back().watch_id(), -1);
  EXPECT_EQ(sink.got.back().header().revision(), store_->rev());
  EXPECT_EQ(sink.got.back().events_size(), 0);
  // Per-watcher progress notifications go only to watchers that asked for them.
  auto pn = Req("p");
  pn.set_progress_notify(true);
  hub_->Create(s, pn);
  sink.Drain(s.get());
  int64_t pn_id = sink.got.back().watch_id();
  hub_->NotifyProgress();
  sink.Drain(s.get());
  EXPECT_EQ(sink.got.back().watch_id(), pn_id);
  EXPECT_EQ(sink.got.back().events_size(), 0);
  EXPECT_EQ(sink.got.back().header().revision(), store_->rev());
  hub_->Cancel(s, pn_id);
  hub_->Cancel(s, 7);
  sink.Drain(s.get());
  EXPECT_TRUE(sink.got.back().canceled());
  EXPECT_EQ(sink.got.back().watch_id(), 7);
  EXPECT_EQ(hub_->watcher_count(), 0u);
  hub_->CloseStream(s);
}

TEST_F(WatchHubTest, FragmentsSplitLargeResponsesButNeverARevisionOtherwise) {
  MakeHub();
  FakeSink sink;
  auto s = hub_->NewStream(&sink);
  auto r = Req("f/");
  r.set_range_end("f0");
  r.set_fragment(true);
  hub_->Create(s, r);
  sink.Drain(s.get());
  // One txn with many keys: one revision, more than fragment_bytes.
  ApplyBatch b(store_.get());
  auto t = b.BeginTxn();
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(t.Put("f/" + std::to_string(i), std::string(50, 'v'), 0).ok());
  t.End();
  ASSERT_TRUE(b.Commit().ok());
  hub_->Notify(b.events(), b.rev());
  sink.Drain(s.get());
  size_t events = 0, fragments = 0;
  for (size_t i = 1; i < sink.got.size(); ++i) {
    events += sink.got[i].events_size();
    if (sink.got[i].fragment()) ++fragments;
  }
  EXPECT_EQ(events, 10u);
  EXPECT_GE(fragments, 1u);
  EXPECT_FALSE(sink.got.back().fragment());
  hub_->CloseStream(s);
}

}  // namespace
}  // namespace meridian::mvcc
