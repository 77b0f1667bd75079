#include "node/mvcc/watch_hub.h"

#include <pthread.h>

#include <algorithm>
#include <chrono>

namespace meridian::mvcc {
namespace {
// etcd's watch errors, as etcd words them in cancel_reason.
constexpr char kErrDuplicateWatchId[] = "mvcc: duplicate watch ID provided on the WatchStream";
constexpr char kErrEmptyWatcherRange[] = "mvcc: watcher range is empty";

// A merged response stays below this, so one response never grows without bound.
constexpr size_t kMaxMergedBytes = 1u << 20;

// Encoded size of an event in a response, with or without its prev_kv.
size_t EventBytes(const mvccpb::Event& e, bool with_prev_kv) {
  size_t n = e.kv().ByteSizeLong() + 8;
  if (with_prev_kv && e.has_prev_kv()) n += e.prev_kv().ByteSizeLong() + 4;
  return n;
}
}  // namespace

// ------------------------------------------------------------------------------------------
// WatchStream

void WatchStream::WriteNextLocked() {
  if (sink_ == nullptr || queue_.empty()) {
    sink_busy_ = false;
    return;
  }
  in_flight_ = std::move(queue_.front().first);
  queued_bytes_ -= queue_.front().second;
  queue_.pop_front();
  ++popped_;
  sink_busy_ = true;
  sink_->Write(&in_flight_, !queue_.empty());
}

bool WatchStream::OnWriteDone() {
  std::lock_guard<std::mutex> lock(mu_);
  WriteNextLocked();
  return sink_busy_;
}

bool WatchStream::writing() const {
  std::lock_guard<std::mutex> lock(mu_);
  return sink_busy_;
}

void WatchStream::Detach() {
  std::lock_guard<std::mutex> lock(mu_);
  sink_ = nullptr;
  popped_ += queue_.size();
  queue_.clear();
  mergeable_.clear();
  queued_bytes_ = 0;
}

bool WatchStream::MergeLocked(int64_t watch_id, std::vector<mvccpb::Event>& events, size_t bytes,
                              int64_t header_rev, size_t max_merged_bytes) {
  auto it = mergeable_.find(watch_id);
  if (it == mergeable_.end() || it->second < popped_) return false;
  auto& [resp, resp_bytes] = queue_[it->second - popped_];
  if (resp_bytes + bytes > max_merged_bytes) return false;
  for (auto& e : events) *resp.add_events() = std::move(e);
  resp.mutable_header()->set_revision(header_rev);
  resp_bytes += bytes;
  queued_bytes_ += bytes;
  return true;
}

bool WatchStream::HasRoom(size_t bytes) const {
  std::lock_guard<std::mutex> lock(mu_);
  if (queue_.empty()) return true;  // one response always fits, however large
  return queue_.size() < max_responses_ && queued_bytes_ + bytes <= max_bytes_;
}

void WatchStream::PushLocked(etcdserverpb::WatchResponse&& resp, size_t bytes) {
  if (sink_ == nullptr) return;
  queue_.emplace_back(std::move(resp), bytes);
  queued_bytes_ += bytes;
  if (!sink_busy_) WriteNextLocked();
}

void WatchStream::PushControl(etcdserverpb::WatchResponse resp) {
  std::lock_guard<std::mutex> lock(mu_);
  // Later events must not be merged into responses queued before a control response (a
  // progress notification would otherwise seem to go backwards).
  if (resp.watch_id() == -1) {
    mergeable_.clear();
  } else {
    mergeable_.erase(resp.watch_id());
  }
  size_t bytes = resp.ByteSizeLong();
  PushLocked(std::move(resp), bytes);
}

size_t WatchStream::queued_responses() const {
  std::lock_guard<std::mutex> lock(mu_);
  return queue_.size();
}

// ------------------------------------------------------------------------------------------
// WatchHub

WatchHub::WatchHub(Store* store, WatchHubOptions options)
    : store_(store), options_(std::move(options)) {
  notified_rev_ = store_->rev();
  catchup_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "watch-catchup");
    CatchupLoop();
  });
}

WatchHub::~WatchHub() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    closing_ = true;
  }
  cv_.notify_all();
  catchup_.join();
}

std::shared_ptr<WatchStream> WatchHub::NewStream(WatchStream::Sink* sink) {
  auto s = std::make_shared<WatchStream>(sink);
  s->max_bytes_ = options_.stream_queue_bytes_max;
  s->max_responses_ = options_.stream_queue_responses_max;
  return s;
}

void WatchHub::CloseStream(const std::shared_ptr<WatchStream>& stream) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    while (!stream->watchers_.empty()) RemoveLocked(stream->watchers_.begin()->second);
  }
  stream->Detach();
}

etcdserverpb::WatchResponse WatchHub::NewResponse(int64_t watch_id, int64_t rev) const {
  etcdserverpb::WatchResponse r;
  if (options_.fill_header) options_.fill_header(r.mutable_header(), rev);
  r.set_watch_id(watch_id);
  return r;
}

void WatchHub::Create(const std::shared_ptr<WatchStream>& stream,
                      const etcdserverpb::WatchCreateRequest& req) {
  std::lock_guard<std::mutex> lock(mu_);
  auto w = std::make_unique<Watcher>();
  // etcd: an empty key means "\0", the smallest key; range_end "\0" means every key >= key.
  w->key = req.key().empty() ? std::string(1, '\0') : req.key();
  w->end = req.range_end();
  int64_t id = req.watch_id();
  const char* err = nullptr;
  KeyRange range(w->key, w->end);
  if (!range.single() && !range.unbounded() && w->end <= w->key) {
    err = kErrEmptyWatcherRange;
  } else if (id != 0 && stream->watchers_.count(id) > 0) {
    err = kErrDuplicateWatchId;
  }
  auto resp = NewResponse(-1, notified_rev_);
  resp.set_created(true);
  if (err != nullptr) {
    resp.set_canceled(true);
    resp.set_cancel_reason(err);
    stream->PushControl(std::move(resp));
    return;
  }
  if (id == 0) {
    while (stream->watchers_.count(stream->next_watch_id_) > 0) ++stream->next_watch_id_;
    id = stream->next_watch_id_++;
  }
  w->id = id;
  w->stream = stream;
  for (int f : req.filters()) {
    if (f == etcdserverpb::WatchCreateRequest::NOPUT) w->no_put = true;
    if (f == etcdserverpb::WatchCreateRequest::NODELETE) w->no_delete = true;
  }
  w->prev_kv = req.prev_kv();
  w->fragment = req.fragment();
  w->progress_notify = req.progress_notify();
  w->next_rev = req.start_revision() > 0 ? req.start_revision() : notified_rev_ + 1;
  resp.set_watch_id(id);
  stream->PushControl(std::move(resp));
  Watcher* raw = w.release();
  stream->watchers_[id] = raw;
  ++watcher_count_;
  if (raw->next_rev > notified_rev_) {
    AddSyncedLocked(raw);
  } else {
    unsynced_.insert(raw);
    cv_.notify_all();
  }
}

void WatchHub::Cancel(const std::shared_ptr<WatchStream>& stream, int64_t watch_id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = stream->watchers_.find(watch_id);
  if (it == stream->watchers_.end()) return;  // etcd answers nothing for an unknown id
  RemoveLocked(it->second);
  auto resp = NewResponse(watch_id, notified_rev_);
  resp.set_canceled(true);
  stream->PushControl(std::move(resp));
  MaybeSendProgressLocked(stream.get());
}

void WatchHub::RequestProgress(const std::shared_ptr<WatchStream>& stream) {
  std::lock_guard<std::mutex> lock(mu_);
  stream->progress_pending_ = true;
  MaybeSendProgressLocked(stream.get());
}

void WatchHub::MaybeSendProgressLocked(WatchStream* stream) {
  if (!stream->progress_pending_) return;
  for (const auto& [id, w] : stream->watchers_) {
    if (!w->synced) return;  // deferred until every watcher has caught up
  }
  stream->progress_pending_ = false;
  stream->PushControl(NewResponse(-1, notified_rev_));
}

void WatchHub::NotifyProgress() {
  std::lock_guard<std::mutex> lock(mu_);
  auto send = [this](Watcher* w) {
    if (w->progress_notify && w->stream->queued_responses() == 0) {
      w->stream->PushControl(NewResponse(w->id, notified_rev_));
    }
  };
  for (auto& [k, w] : synced_by_key_) send(w);
  for (Watcher* w : synced_ranges_) send(w);
}

void WatchHub::Resync(int64_t rev) {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<Watcher*> synced;
  for (auto& [k, w] : synced_by_key_) synced.push_back(w);
  for (Watcher* w : synced_ranges_) synced.push_back(w);
  for (Watcher* w : synced) {
    RemoveSyncedLocked(w);
    // A synced watcher has seen everything up to the last notified revision.
    w->next_rev = std::max(w->next_rev, notified_rev_ + 1);
    unsynced_.insert(w);
  }
  notified_rev_ = std::max(notified_rev_, rev);
  if (!unsynced_.empty()) cv_.notify_all();
}

void WatchHub::AddSyncedLocked(Watcher* w) {
  w->synced = true;
  if (KeyRange(w->key, w->end).single()) {
    synced_by_key_.emplace(w->key, w);
  } else {
    synced_ranges_.insert(w);
  }
}

void WatchHub::RemoveSyncedLocked(Watcher* w) {
  if (!w->synced) return;
  w->synced = false;
  if (KeyRange(w->key, w->end).single()) {
    auto [b, e] = synced_by_key_.equal_range(w->key);
    for (auto it = b; it != e; ++it) {
      if (it->second == w) {
        synced_by_key_.erase(it);
        break;
      }
    }
  } else {
    synced_ranges_.erase(w);
  }
}

void WatchHub::RemoveLocked(Watcher* w) {
  RemoveSyncedLocked(w);
  unsynced_.erase(w);
  w->stream->watchers_.erase(w->id);
  --watcher_count_;
  delete w;
}

bool WatchHub::Matches(const Watcher& w, const mvccpb::Event& ev) const {
  if (ev.kv().mod_revision() < w.next_rev) return false;
  if (!KeyRange(w.key, w.end).Contains(ev.kv().key())) return false;
  if (ev.type() == mvccpb::Event::PUT && w.no_put) return false;
  if (ev.type() == mvccpb::Event::DELETE && w.no_delete) return false;
  return true;
}

bool WatchHub::Deliver(Watcher* w, std::vector<mvccpb::Event>&& events, size_t bytes,
                       int64_t header_rev) {
  WatchStream* s = w->stream.get();
  std::lock_guard<std::mutex> lock(s->mu_);
  if (!s->queue_.empty() &&
      (s->queue_.size() >= s->max_responses_ || s->queued_bytes_ + bytes > s->max_bytes_)) {
    return false;
  }
  if (!w->fragment || bytes <= options_.fragment_bytes || events.size() < 2) {
    // Merge into this watcher's queued, unsent response when the stream is backed up; never
    // for fragmenting watchers, whose response sizes the client asked to bound.
    if (!w->fragment && s->MergeLocked(w->id, events, bytes, header_rev, kMaxMergedBytes)) {
      return true;
    }
    auto resp = NewResponse(w->id, header_rev);
    for (auto& e : events) *resp.add_events() = std::move(e);
    s->PushLocked(std::move(resp), bytes);
    if (!w->fragment && s->sink_ != nullptr)
      s->mergeable_[w->id] = s->popped_ + s->queue_.size() - 1;
    return true;
  }
  // Fragments: every piece but the last says fragment=true; each holds at least one event.
  size_t i = 0;
  while (i < events.size()) {
    auto resp = NewResponse(w->id, header_rev);
    size_t piece = 0;
    while (i < events.size() && (resp.events_size() == 0 ||
                                 piece + events[i].ByteSizeLong() <= options_.fragment_bytes)) {
      piece += events[i].ByteSizeLong();
      *resp.add_events() = std::move(events[i++]);
    }
    resp.set_fragment(i < events.size());
    s->PushLocked(std::move(resp), piece);
  }
  return true;
}

void WatchHub::Notify(const std::vector<mvccpb::Event>& events, int64_t rev) {
  std::lock_guard<std::mutex> lock(mu_);
  notified_rev_ = std::max(notified_rev_, rev);
  if (watcher_count_ == 0 || events.empty()) return;
  // Indexes of matching events per watcher; events are copied once per watcher, and without
  // prev_kv unless it asked for it (copies dominate the cost of a wide fan-out).
  std::unordered_map<Watcher*, std::vector<uint32_t>> per_watcher;
  std::vector<Watcher*> order;  // deterministic delivery order: first match first
  auto add = [&](Watcher* w, const mvccpb::Event& ev, uint32_t i) {
    if (!Matches(*w, ev)) return;
    auto [it, inserted] = per_watcher.try_emplace(w);
    if (inserted) order.push_back(w);
    it->second.push_back(i);
  };
  // Sizes are measured once per event, not once per watcher.
  std::vector<size_t> bytes_plain(events.size()), bytes_with_prev(events.size());
  for (uint32_t i = 0; i < events.size(); ++i) {
    bytes_plain[i] = EventBytes(events[i], false);
    bytes_with_prev[i] = EventBytes(events[i], true);
  }
  for (uint32_t i = 0; i < events.size(); ++i) {
    const auto& ev = events[i];
    auto [b, e] = synced_by_key_.equal_range(ev.kv().key());
    for (auto it = b; it != e; ++it) add(it->second, ev, i);
    for (Watcher* w : synced_ranges_) add(w, ev, i);
  }
  std::vector<mvccpb::Event> evs;
  for (Watcher* w : order) {
    const auto& idx = per_watcher[w];
    evs.clear();
    evs.reserve(idx.size());
    size_t bytes = 0;
    for (uint32_t i : idx) {
      const auto& src = events[i];
      bytes += w->prev_kv ? bytes_with_prev[i] : bytes_plain[i];
      if (w->prev_kv) {
        evs.push_back(src);
      } else {
        evs.emplace_back();
        evs.back().set_type(src.type());
        *evs.back().mutable_kv() = src.kv();
      }
    }
    int64_t first = evs.front().kv().mod_revision();
    if (Deliver(w, std::move(evs), bytes, rev)) {
      w->next_rev = rev + 1;
    } else {
      // The stream is full: this watcher leaves the hot path and catches up from history.
      RemoveSyncedLocked(w);
      w->next_rev = first;
      unsynced_.insert(w);
    }
    evs = std::vector<mvccpb::Event>();
  }
  if (!unsynced_.empty()) cv_.notify_all();
}

void WatchHub::CatchupLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!closing_) {
    if (unsynced_.empty()) {
      cv_.wait(lock, [&] { return closing_ || !unsynced_.empty(); });
      continue;
    }
    struct Job {
      Watcher* w;
      std::shared_ptr<WatchStream> stream;  // keeps the stream alive while unlocked
      int64_t id;
      int64_t next_rev;
      std::string key, end;
      bool prev_kv;
    };
    std::vector<Job> jobs;
    for (Watcher* w : unsynced_) {
      if (!w->stream->HasRoom(1)) continue;
      jobs.push_back(Job{w, w->stream, w->id, w->next_rev, w->key, w->end, w->prev_kv});
      if (jobs.size() >= 256) break;
    }
    if (jobs.empty()) {
      // Every unsynced watcher's stream is full: wait for clients to drain.
      cv_.wait_for(lock, std::chrono::milliseconds(10));
      continue;
    }
    lock.unlock();
    auto view = store_->View();
    struct Result {
      absl::Status status;
      std::vector<mvccpb::Event> events;
      int64_t next_rev = 0;
    };
    std::vector<Result> results(jobs.size());
    for (size_t i = 0; i < jobs.size(); ++i) {
      const Job& j = jobs[i];
      Result& r = results[i];
      std::vector<mvccpb::Event> all;
      r.status = view->ReadEvents(j.next_rev, options_.catchup_batch_events, &all, &r.next_rev);
      if (!r.status.ok()) continue;
      KeyRange range(j.key, j.end);
      for (auto& ev : all) {
        if (!range.Contains(ev.kv().key())) continue;
        if (j.prev_kv) {
          auto prev = view->Get(ev.kv().key(), ev.kv().mod_revision() - 1);
          if (prev.ok() && prev->has_value()) *ev.mutable_prev_kv() = std::move(**prev);
        }
        r.events.push_back(std::move(ev));
      }
    }
    lock.lock();
    for (size_t i = 0; i < jobs.size(); ++i) {
      Job& j = jobs[i];
      Result& r = results[i];
      // The watcher may have been cancelled, or its stream closed, while we were unlocked.
      auto sit = j.stream->watchers_.find(j.id);
      if (sit == j.stream->watchers_.end() || sit->second != j.w || j.w->synced ||
          j.w->next_rev != j.next_rev) {
        continue;
      }
      Watcher* w = j.w;
      if (!r.status.ok()) {
        // Behind compaction: etcd tells the watcher the compact revision and cancels it.
        auto resp = NewResponse(w->id, 0);
        resp.set_compact_revision(view->compact_rev());
        resp.set_canceled(true);
        auto stream = w->stream;
        RemoveLocked(w);
        stream->PushControl(std::move(resp));
        MaybeSendProgressLocked(stream.get());
        continue;
      }
      std::vector<mvccpb::Event> evs;
      for (auto& ev : r.events) {
        if (Matches(*w, ev)) evs.push_back(std::move(ev));
      }
      size_t bytes = 0;
      for (const auto& ev : evs) bytes += EventBytes(ev, true);
      if (!evs.empty() && !Deliver(w, std::move(evs), bytes, view->rev())) continue;
      w->next_rev = r.next_rev;
      if (w->next_rev > notified_rev_) {
        unsynced_.erase(w);
        AddSyncedLocked(w);
        MaybeSendProgressLocked(w->stream.get());
      }
    }
  }
}

size_t WatchHub::watcher_count() const {
  std::lock_guard<std::mutex> lock(mu_);
  return watcher_count_;
}

size_t WatchHub::unsynced_count() const {
  std::lock_guard<std::mutex> lock(mu_);
  return unsynced_.size();
}

}  // namespace meridian::mvcc
