#include "node/peer/transport.h"

#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/temp_dir.h"
#include "meridian/raft.grpc.pb.h"
#include "node/peer/convert.h"

namespace meridian::peer {
namespace {

using raft::Entry;
using raft::EntryType;
using raft::Message;
using raft::MessageType;
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

constexpr int kWaitMs = 10000;  // generous upper bound for anything the tests wait for

// ------------------------------------------------------------------------------------------
// convert

Message FullMessage(MessageType type) {
  Message m;
  m.type = type;
  m.to = 2;
  m.from = 1;
  m.term = 7;
  m.log_term = 6;
  m.index = 100;
  m.entries = {Entry{101, 7, EntryType::kNormal, "put x"},
               Entry{102, 7, EntryType::kConfChange, std::string("\0cc\xff", 4)},
               Entry{103, 7, EntryType::kNormal, ""}};
  m.commit = 99;
  m.reject = true;
  m.reject_hint = 42;
  m.context = std::string("ctx\0id", 6);
  m.read_round = 5;
  m.leader_transfer = true;
  return m;
}

TEST(ConvertTest, EveryMessageTypeRoundTripsWithAllFields) {
  for (int t = static_cast<int>(MessageType::kHup);
       t <= static_cast<int>(MessageType::kReadIndexResp); ++t) {
    Message m = FullMessage(static_cast<MessageType>(t));
    meridianpb::RaftMessage pb;
    EncodeMessage(m, &pb);
    absl::StatusOr<Message> copy = DecodeMessage(pb);
    ASSERT_TRUE(copy.ok()) << copy.status();
    EXPECT_EQ(*copy, m) << raft::DescribeMessage(m);
    // The moving forms give the same result.
    Message moved_from = m;
    meridianpb::RaftMessage pb2;
    EncodeMessage(std::move(moved_from), &pb2);
    absl::StatusOr<Message> moved = DecodeMessage(std::move(pb2));
    ASSERT_TRUE(moved.ok()) << moved.status();
    EXPECT_EQ(*moved, m);
  }
}

TEST(ConvertTest, SnapshotMetadataTravelsButNotItsData) {
  Message m = FullMessage(MessageType::kSnap);
  m.snapshot = raft::Snapshot{{500, 6, raft::ConfState{{1, 2, 3}, {4, 9}}}, "payload"};
  meridianpb::RaftMessage pb;
  EncodeMessage(m, &pb);
  EXPECT_TRUE(pb.has_snapshot());
  absl::StatusOr<Message> back = DecodeMessage(pb);
  ASSERT_TRUE(back.ok()) << back.status();
  m.snapshot->data.clear();
  EXPECT_EQ(*back, m);

  Message none = FullMessage(MessageType::kApp);
  EncodeMessage(none, &pb);
  EXPECT_FALSE(pb.has_snapshot());
  back = DecodeMessage(pb);
  ASSERT_TRUE(back.ok());
  EXPECT_FALSE(back->snapshot.has_value());
}

TEST(ConvertTest, HardStateAndConfStateRoundTrip) {
  raft::HardState hs{9, 3, 77};
  meridianpb::RaftHardState hpb;
  EncodeHardState(hs, &hpb);
  EXPECT_EQ(DecodeHardState(hpb), hs);
  raft::ConfState cs{{1, 5, 8}, {2, 3}};
  meridianpb::RaftSnapshotConfState cpb;
  EncodeConfState(cs, &cpb);
  absl::StatusOr<raft::ConfState> back = DecodeConfState(cpb);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, cs);
}

TEST(ConvertTest, RejectsUnknownEnumsAndBadMemberships) {
  meridianpb::RaftMessage pb;
  EncodeMessage(FullMessage(MessageType::kApp), &pb);

  meridianpb::RaftMessage bad = pb;
  bad.set_type(static_cast<meridianpb::RaftMessageType>(999));
  EXPECT_EQ(DecodeMessage(bad).status().code(), absl::StatusCode::kInvalidArgument);
  bad.set_type(meridianpb::RAFT_MSG_UNSPECIFIED);
  EXPECT_EQ(DecodeMessage(bad).status().code(), absl::StatusCode::kInvalidArgument);

  bad = pb;
  bad.mutable_entries(1)->set_type(static_cast<meridianpb::RaftEntryType>(7));
  EXPECT_EQ(DecodeMessage(bad).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(DecodeMessage(std::move(bad)).status().code(), absl::StatusCode::kInvalidArgument);

  auto with_conf = [&](std::vector<uint64_t> voters, std::vector<uint64_t> learners) {
    meridianpb::RaftMessage m = pb;
    m.set_type(meridianpb::RAFT_MSG_SNAP);
    auto* cs = m.mutable_snapshot()->mutable_metadata()->mutable_conf_state();
    cs->mutable_voters()->Add(voters.begin(), voters.end());
    cs->mutable_learners()->Add(learners.begin(), learners.end());
    return DecodeMessage(m).status();
  };
  EXPECT_TRUE(with_conf({1, 2, 3}, {4}).ok());
  EXPECT_EQ(with_conf({2, 1}, {}).code(), absl::StatusCode::kInvalidArgument);      // unsorted
  EXPECT_EQ(with_conf({1, 1}, {}).code(), absl::StatusCode::kInvalidArgument);      // duplicate
  EXPECT_EQ(with_conf({0, 1}, {}).code(), absl::StatusCode::kInvalidArgument);      // id 0
  EXPECT_EQ(with_conf({1, 2}, {2}).code(), absl::StatusCode::kInvalidArgument);     // both
  EXPECT_EQ(with_conf({1, 3}, {2, 2}).code(), absl::StatusCode::kInvalidArgument);  // dup learner
}

TEST(ConvertTest, GarbageNeverCrashes) {
  std::mt19937_64 rng(12345);
  meridianpb::RaftMessage valid;
  Message snap = FullMessage(MessageType::kSnap);
  snap.snapshot = raft::Snapshot{{5, 1, raft::ConfState{{1, 2}, {3}}}, ""};
  EncodeMessage(snap, &valid);
  const std::string good = valid.SerializeAsString();
  int parsed = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string bytes;
    if (i % 2 == 0) {
      bytes.resize(rng() % 64);
      for (char& c : bytes) c = static_cast<char>(rng());
    } else {
      bytes = good;  // flip a few bytes of a valid encoding
      for (int k = 0; k < 3; ++k) bytes[rng() % bytes.size()] = static_cast<char>(rng());
    }
    meridianpb::RaftMessage pb;
    if (!pb.ParseFromString(bytes)) continue;
    ++parsed;
    absl::StatusOr<Message> m = DecodeMessage(pb);
    if (!m.ok()) {
      EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
    }
  }
  EXPECT_GT(parsed, 100);
}

TEST(PeerUrlTest, StripsTheSchemeAndRefusesTls) {
  EXPECT_EQ(*PeerUrlToTarget("http://127.0.0.1:2380"), "127.0.0.1:2380");
  EXPECT_EQ(*PeerUrlToTarget("HTTP://[::1]:2380"), "[::1]:2380");
  EXPECT_EQ(*PeerUrlToTarget("node-1.example:2380"), "node-1.example:2380");
  absl::StatusOr<std::string> tls = PeerUrlToTarget("https://127.0.0.1:2380");
  ASSERT_FALSE(tls.ok());
  EXPECT_EQ(tls.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(tls.status().message()).find("TLS"), std::string::npos);
  EXPECT_FALSE(PeerUrlToTarget("http://127.0.0.1").ok());
  EXPECT_FALSE(PeerUrlToTarget("nonsense").ok());
}

// ------------------------------------------------------------------------------------------
// transport

// One member: a transport, its peer server and everything its callbacks reported.
class Node {
 public:
  explicit Node(uint64_t id, uint64_t cluster_id = 1) : id_(id), cluster_id_(cluster_id) {}
  ~Node() { Shutdown(); }

  int max_inbound_calls = 128;

  // Starts (or restarts) on `port` (0: a free one).
  void Start(int port = 0, size_t max_queue_msgs = 4096) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      messages_.clear();
      snapshots_.clear();
      unreachable_.clear();
      snapshot_status_.clear();
    }
    PeerTransportOptions o;
    o.self_id = id_;
    o.cluster_id = cluster_id_;
    o.max_queue_msgs = max_queue_msgs;
    o.max_inbound_calls = max_inbound_calls;
    o.snapshot_dir = dir_.File("snap");
    o.dial_backoff_min_ms = 20;
    o.dial_backoff_max_ms = 200;
    o.snapshot_chunk_bytes = 256 << 10;
    PeerTransportCallbacks cb;
    cb.on_message = [this](Message m) { Record([&] { messages_.push_back(std::move(m)); }); };
    cb.on_snapshot = [this](Message m, std::string path) {
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return !hold_snapshots_; });
      }
      Record([&] { snapshots_.emplace_back(std::move(m), std::move(path)); });
    };
    cb.on_unreachable = [this](uint64_t id) { Record([&] { ++unreachable_[id]; }); };
    cb.on_snapshot_status = [this](uint64_t id, bool ok) {
      Record([&] { snapshot_status_.emplace_back(id, ok); });
    };
    cb.cluster_info = [this] {
      meridianpb::ClusterInfoResponse r;
      r.set_cluster_id(cluster_id_);
      auto* m = r.add_members();
      m->set_id(id_);
      m->set_name("node" + std::to_string(id_));
      m->add_peer_urls(url());
      m->add_client_urls("http://127.0.0.1:2379");
      return r;
    };
    auto t = PeerTransport::Create(o, cb);
    ASSERT_TRUE(t.ok()) << t.status();
    transport_ = *std::move(t);
    std::vector<int> ports;
    auto server =
        StartPeerServer({"http://127.0.0.1:" + std::to_string(port)}, transport_.get(), &ports);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    port_ = ports.at(0);
  }

  void Shutdown() {
    if (transport_ != nullptr) transport_->Stop();
    if (server_ != nullptr) server_->Shutdown();
    server_.reset();
    transport_.reset();
  }

  PeerTransport& t() { return *transport_; }
  uint64_t id() const { return id_; }
  int port() const { return port_; }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }

  // Waits until `pred` (evaluated under the node's lock) holds; false after timeout_ms.
  bool WaitFor(const std::function<bool()>& pred, int timeout_ms = kWaitMs) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, milliseconds(timeout_ms), pred);
  }

  template <typename F>
  auto Locked(F f) {
    std::lock_guard<std::mutex> lock(mu_);
    return f();
  }

  void HoldSnapshots(bool hold) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      hold_snapshots_ = hold;
    }
    cv_.notify_all();
  }

  // Guarded by the node's lock (use WaitFor/Locked).
  std::vector<Message> messages_;
  std::vector<std::pair<Message, std::string>> snapshots_;
  std::map<uint64_t, int> unreachable_;
  std::vector<std::pair<uint64_t, bool>> snapshot_status_;

 private:
  template <typename F>
  void Record(F f) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      f();
    }
    cv_.notify_all();
  }

  const uint64_t id_;
  const uint64_t cluster_id_;
  TempDir dir_{"meridian_peer_test"};
  std::unique_ptr<PeerTransport> transport_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
  bool hold_snapshots_ = false;
};

void Connect(Node& a, Node& b) {
  ASSERT_TRUE(a.t().AddPeer(b.id(), {b.url()}).ok());
  ASSERT_TRUE(b.t().AddPeer(a.id(), {a.url()}).ok());
}

Message App(uint64_t from, uint64_t to, uint64_t index) {
  Message m = FullMessage(MessageType::kApp);
  m.from = from;
  m.to = to;
  m.index = index;
  m.reject = false;
  return m;
}

Message Heartbeat(uint64_t from, uint64_t to, uint64_t commit) {
  Message m;
  m.type = MessageType::kHeartbeat;
  m.from = from;
  m.to = to;
  m.term = 3;
  m.commit = commit;
  return m;
}

// Polls `pred` (for state outside a Node's lock, e.g. counters) until it holds or time runs out.
bool Eventually(const std::function<bool()>& pred) {
  const auto deadline = Clock::now() + milliseconds(kWaitMs);
  while (!pred()) {
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(milliseconds(1));
  }
  return true;
}

// Sends a fresh message from `from` every 20 ms until `watcher` sees `done`. Needed where the
// sender's first writes on a new stream may be accepted locally and lost (raft resends alike).
bool SendUntil(Node& from, const std::function<Message(uint64_t)>& make, Node& watcher,
               const std::function<bool()>& done) {
  const auto deadline = Clock::now() + milliseconds(kWaitMs);
  for (uint64_t i = 0; Clock::now() < deadline; ++i) {
    from.t().Send({make(i)});
    if (watcher.WaitFor(done, 20)) return true;
  }
  return false;
}

TEST(PeerTransportTest, MessagesFlowBothWaysBetweenThreeMembersInOrder) {
  Node n1(1), n2(2), n3(3);
  n1.Start();
  n2.Start();
  n3.Start();
  Connect(n1, n2);
  Connect(n1, n3);
  Connect(n2, n3);

  // Every field survives the trip, for every peer message type.
  std::vector<Message> to2, to1;
  for (MessageType type :
       {MessageType::kProp, MessageType::kReadIndex, MessageType::kTransferLeader,
        MessageType::kApp, MessageType::kAppResp, MessageType::kVote, MessageType::kVoteResp,
        MessageType::kPreVote, MessageType::kPreVoteResp, MessageType::kHeartbeat,
        MessageType::kHeartbeatResp, MessageType::kTimeoutNow, MessageType::kReadIndexResp}) {
    Message m = FullMessage(type);
    to2.push_back(m);
    m.from = 2;
    m.to = 1;
    to1.push_back(m);
  }
  n1.t().Send(to2);
  n2.t().Send(to1);
  ASSERT_TRUE(n2.WaitFor([&] { return n2.messages_.size() >= to2.size(); }));
  ASSERT_TRUE(n1.WaitFor([&] { return n1.messages_.size() >= to1.size(); }));
  n2.Locked([&] { EXPECT_EQ(n2.messages_, to2); });
  n1.Locked([&] { EXPECT_EQ(n1.messages_, to1); });

  // Many messages, in several Send calls, from two senders to one receiver: each sender's order
  // is kept.
  constexpr int kCount = 2000;
  for (int i = 0; i < kCount; i += 100) {
    std::vector<Message> a, b;
    for (int j = i; j < i + 100; ++j) {
      a.push_back(Heartbeat(1, 3, static_cast<uint64_t>(j)));
      b.push_back(Heartbeat(2, 3, static_cast<uint64_t>(j)));
    }
    n1.t().Send(std::move(a));
    n2.t().Send(std::move(b));
  }
  ASSERT_TRUE(n3.WaitFor([&] { return n3.messages_.size() >= 2 * kCount; }));
  n3.Locked([&] {
    uint64_t next[3] = {0, 0, 0};
    for (const Message& m : n3.messages_) {
      ASSERT_EQ(m.commit, next[m.from]) << "from " << m.from;
      ++next[m.from];
    }
  });
  EXPECT_EQ(n3.t().messages_received(), 2u * kCount);
  // The sender counts a batch once its write returns, which may be after the receiver has it.
  EXPECT_TRUE(Eventually([&] { return n1.t().messages_sent() >= to2.size() + kCount; }));
  EXPECT_EQ(n1.t().messages_dropped(), 0u);
  n1.Locked([&] { EXPECT_TRUE(n1.unreachable_.empty()); });
}

TEST(PeerTransportTest, DropsWhatCannotBeSent) {
  Node n1(1);
  n1.Start();
  std::vector<Message> msgs;
  msgs.push_back(Heartbeat(1, 9, 1));  // unknown peer
  msgs.push_back(Heartbeat(1, 1, 1));  // self
  Message hup;
  hup.type = MessageType::kHup;
  hup.to = 9;
  msgs.push_back(hup);
  n1.t().Send(msgs);
  EXPECT_EQ(n1.t().messages_dropped(), 3u);
  EXPECT_EQ(n1.t().AddPeer(1, {"http://127.0.0.1:1"}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(n1.t().AddPeer(2, {"https://127.0.0.1:1"}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(n1.t().AddPeer(2, {"http://127.0.0.1:1"}).ok());
  EXPECT_EQ(n1.t().AddPeer(2, {"http://127.0.0.1:1"}).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_TRUE(n1.t().RemovePeer(2).ok());
  EXPECT_EQ(n1.t().RemovePeer(2).code(), absl::StatusCode::kNotFound);
}

std::string WriteRandomFile(const std::string& path, size_t size) {
  std::string data(size, '\0');
  std::mt19937_64 rng(99);
  for (char& c : data) c = static_cast<char>(rng());
  std::ofstream(path, std::ios::binary).write(data.data(), static_cast<std::streamsize>(size));
  return data;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

Message SnapMessage(uint64_t from, uint64_t to) {
  Message m;
  m.type = MessageType::kSnap;
  m.from = from;
  m.to = to;
  m.term = 4;
  m.snapshot = raft::Snapshot{{1000, 3, raft::ConfState{{1, 2}, {3}}}, "ignored in-memory data"};
  return m;
}

TEST(PeerTransportTest, SnapshotArrivesByteIdenticalAndIsReported) {
  Node n1(1), n2(2);
  n1.Start();
  n2.Start();
  Connect(n1, n2);
  TempDir src("meridian_peer_src");
  const std::string payload = WriteRandomFile(src.File("snap.bin"), 5 << 20);

  // Hold the receiver inside on_snapshot so the first transfer stays in flight.
  n2.HoldSnapshots(true);
  n1.t().SendSnapshot(SnapMessage(1, 2), src.File("snap.bin"));
  // A second one to the same peer meanwhile is refused.
  n1.t().SendSnapshot(SnapMessage(1, 2), src.File("snap.bin"));
  ASSERT_TRUE(n1.WaitFor([&] { return !n1.snapshot_status_.empty(); }));
  n1.Locked([&] { EXPECT_EQ(n1.snapshot_status_.front(), std::make_pair(uint64_t{2}, false)); });
  n2.HoldSnapshots(false);

  ASSERT_TRUE(n1.WaitFor([&] { return n1.snapshot_status_.size() >= 2; }));
  n1.Locked([&] {
    EXPECT_EQ(n1.snapshot_status_.size(), 2u);
    EXPECT_EQ(n1.snapshot_status_.back(), std::make_pair(uint64_t{2}, true));
  });
  n2.Locked([&] {
    ASSERT_EQ(n2.snapshots_.size(), 1u);
    Message expected = SnapMessage(1, 2);
    expected.snapshot->data.clear();
    EXPECT_EQ(n2.snapshots_[0].first, expected);
    const std::string& path = n2.snapshots_[0].second;
    EXPECT_EQ(path.rfind(n2.t().options().snapshot_dir + "/", 0), 0u) << path;
    EXPECT_TRUE(ReadFile(path) == payload) << "payload differs";
  });
  EXPECT_EQ(n1.t().snapshots_sent(), 1u);
  EXPECT_EQ(n2.t().snapshots_received(), 1u);

  // Another one once the first is done is accepted; an empty payload works too.
  std::ofstream(src.File("empty.bin")).close();
  n1.t().SendSnapshot(SnapMessage(1, 2), src.File("empty.bin"));
  ASSERT_TRUE(n1.WaitFor([&] { return n1.snapshot_status_.size() >= 3; }));
  n1.Locked([&] { EXPECT_TRUE(n1.snapshot_status_.back().second); });
  n2.Locked([&] {
    ASSERT_EQ(n2.snapshots_.size(), 2u);
    EXPECT_EQ(ReadFile(n2.snapshots_[1].second), "");
  });

  // A missing payload file fails cleanly.
  n1.t().SendSnapshot(SnapMessage(1, 2), src.File("missing.bin"));
  ASSERT_TRUE(n1.WaitFor([&] { return n1.snapshot_status_.size() >= 4; }));
  n1.Locked([&] { EXPECT_FALSE(n1.snapshot_status_.back().second); });
}

TEST(PeerTransportTest, RemovePeerCancelsItsSnapshotAndReportsNothing) {
  Node n1(1), n2(2);
  n1.Start();
  n2.Start();
  Connect(n1, n2);
  TempDir src("meridian_peer_src");
  WriteRandomFile(src.File("snap.bin"), 1 << 20);
  n2.HoldSnapshots(true);  // the transfer stays in flight until released
  n1.t().SendSnapshot(SnapMessage(1, 2), src.File("snap.bin"));
  ASSERT_TRUE(Eventually([&] { return n2.t().snapshots_received() == 1; }));
  const auto start = Clock::now();
  ASSERT_TRUE(n1.t().RemovePeer(2).ok());
  EXPECT_LT(Clock::now() - start, milliseconds(1000));
  EXPECT_FALSE(n1.t().HasPeer(2));
  n2.HoldSnapshots(false);
  n1.t().Send({Heartbeat(1, 2, 1)});  // now an unknown peer: dropped
  EXPECT_EQ(n1.t().messages_dropped(), 1u);
  // Nothing about member 2 is reported any more (give a late report the chance to show up).
  EXPECT_FALSE(n1.WaitFor([&] { return !n1.snapshot_status_.empty(); }, 200));
}

TEST(PeerTransportTest, StoppedPeerIsReportedUnreachableAndTheQueueStaysBounded) {
  constexpr size_t kMaxQueue = 64;
  Node n1(1), n2(2);
  n1.Start(0, kMaxQueue);
  n2.Start();
  Connect(n1, n2);
  n2.Shutdown();

  for (int i = 0; i < 200; ++i) {
    std::vector<Message> batch;
    for (int j = 0; j < 50; ++j) batch.push_back(App(1, 2, static_cast<uint64_t>(i * 50 + j)));
    n1.t().Send(std::move(batch));
    ASSERT_LE(n1.t().queued_messages(2), kMaxQueue);
  }
  ASSERT_TRUE(n1.WaitFor([&] { return n1.unreachable_[2] > 0; }));
  EXPECT_GT(n1.t().messages_dropped(), 0u);
  EXPECT_LE(n1.t().queued_messages(2), kMaxQueue);

  // A snapshot to it fails too.
  TempDir src("meridian_peer_src");
  WriteRandomFile(src.File("snap.bin"), 1 << 20);
  n1.t().SendSnapshot(SnapMessage(1, 2), src.File("snap.bin"));
  ASSERT_TRUE(n1.WaitFor([&] { return !n1.snapshot_status_.empty(); }));
  n1.Locked([&] { EXPECT_FALSE(n1.snapshot_status_.front().second); });

  // Stop is prompt although the peer is gone and messages are queued.
  n1.t().Send({App(1, 2, 1), App(1, 2, 2)});
  const auto start = Clock::now();
  n1.t().Stop();
  EXPECT_LT(Clock::now() - start, milliseconds(1000));
}

TEST(PeerTransportTest, StopIsPromptWithAnUnansweringPeer) {
  // A listening socket that never accepts: connections complete in the kernel backlog but no
  // HTTP/2 handshake ever happens, so writes and snapshot sends stay pending.
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(fd, 16), 0);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const std::string url = "http://127.0.0.1:" + std::to_string(ntohs(addr.sin_port));

  Node n1(1);
  n1.Start();
  ASSERT_TRUE(n1.t().AddPeer(2, {url}).ok());
  n1.t().Send({App(1, 2, 1), App(1, 2, 2)});
  TempDir src("meridian_peer_src");
  WriteRandomFile(src.File("snap.bin"), 4 << 20);
  n1.t().SendSnapshot(SnapMessage(1, 2), src.File("snap.bin"));
  // Wait until the transport's connection sits in the backlog: the calls are then stuck.
  pollfd pfd{fd, POLLIN, 0};
  ASSERT_EQ(::poll(&pfd, 1, kWaitMs), 1);
  const auto start = Clock::now();
  n1.t().Stop();
  EXPECT_LT(Clock::now() - start, milliseconds(1000));
  ::close(fd);
}

TEST(PeerTransportTest, RestartedPeerOnTheSamePortGetsLaterMessages) {
  Node n1(1), n2(2);
  n1.Start();
  n2.Start();
  Connect(n1, n2);
  n1.t().Send({Heartbeat(1, 2, 1)});
  ASSERT_TRUE(n2.WaitFor([&] { return n2.messages_.size() == 1; }));

  const int port = n2.port();
  n2.Shutdown();
  ASSERT_TRUE(SendUntil(
      n1, [](uint64_t i) { return Heartbeat(1, 2, 2 + i); }, n1,
      [&] { return n1.unreachable_[2] > 0; }));

  n2.Start(port);
  ASSERT_EQ(n2.port(), port);
  ASSERT_TRUE(n2.t().AddPeer(1, {n1.url()}).ok());
  // Messages sent from now on get through once the writer has re-dialled.
  ASSERT_TRUE(SendUntil(
      n1, [](uint64_t i) { return Heartbeat(1, 2, 100 + i); }, n2,
      [&] { return !n2.messages_.empty(); }));
  n2.Locked([&] { EXPECT_GE(n2.messages_[0].commit, 100u); });
  // And the other direction works on the new incarnation.
  n2.t().Send({Heartbeat(2, 1, 7)});
  ASSERT_TRUE(n1.WaitFor([&] { return !n1.messages_.empty() && n1.messages_.back().commit == 7; }));
}

TEST(PeerTransportTest, UpdatePeerRedialsTheNewUrl) {
  Node n1(1), n2(2), n3(3);
  n1.Start();
  n2.Start();
  n3.Start();
  // n1 believes member 2 lives at n3's address; n3 refuses messages for someone else.
  ASSERT_TRUE(n1.t().AddPeer(2, {n3.url()}).ok());
  ASSERT_TRUE(SendUntil(
      n1, [](uint64_t i) { return Heartbeat(1, 2, i); }, n1,
      [&] { return n1.unreachable_[2] > 0; }));
  ASSERT_TRUE(n1.t().UpdatePeer(2, {n2.url()}).ok());
  ASSERT_TRUE(SendUntil(
      n1, [](uint64_t i) { return Heartbeat(1, 2, i); }, n2,
      [&] { return !n2.messages_.empty(); }));
  n3.Locked([&] { EXPECT_TRUE(n3.messages_.empty()); });
}

TEST(PeerTransportTest, ClusterIdMismatchIsRejected) {
  Node n1(1, /*cluster_id=*/0xabc), n2(2, /*cluster_id=*/0xdef);
  n1.Start();
  n2.Start();
  ASSERT_TRUE(n1.t().AddPeer(2, {n2.url()}).ok());

  // Directly: FAILED_PRECONDITION "cluster ID mismatch".
  auto stub = meridianpb::Peer::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string(n2.port()), grpc::InsecureChannelCredentials()));
  {
    grpc::ClientContext ctx;
    ctx.AddMetadata("x-meridian-cluster-id", "0000000000000abc");
    ctx.AddMetadata("x-meridian-from", "0000000000000001");
    meridianpb::StreamSummary summary;
    auto writer = stub->Stream(&ctx, &summary);
    meridianpb::MessageBatch batch;
    EncodeMessage(Heartbeat(1, 2, 1), batch.add_messages());
    writer->Write(batch);
    writer->WritesDone();
    grpc::Status st = writer->Finish();
    EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_EQ(st.error_message(), "cluster ID mismatch");
  }
  {
    grpc::ClientContext ctx;
    ctx.AddMetadata("x-meridian-cluster-id", "0000000000000abc");
    ctx.AddMetadata("x-meridian-from", "0000000000000001");
    meridianpb::SnapshotAck ack;
    auto writer = stub->SendSnapshot(&ctx, &ack);
    writer->WritesDone();
    grpc::Status st = writer->Finish();
    EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_EQ(st.error_message(), "cluster ID mismatch");
  }

  // Through the transport: the sender sees the peer unreachable, the receiver gets nothing.
  ASSERT_TRUE(SendUntil(
      n1, [](uint64_t i) { return Heartbeat(1, 2, i); }, n1,
      [&] { return n1.unreachable_[2] > 0; }));
  n2.Locked([&] { EXPECT_TRUE(n2.messages_.empty()); });
  EXPECT_EQ(n2.t().messages_received(), 0u);

  // A joiner that learns the right id is accepted from then on.
  n2.t().set_cluster_id(0xabc);
  ASSERT_TRUE(SendUntil(
      n1, [](uint64_t i) { return Heartbeat(1, 2, i); }, n2,
      [&] { return !n2.messages_.empty(); }));
}

TEST(PeerTransportTest, HostileStreamsAreRefused) {
  Node n2(2);
  n2.Start();
  auto stub = meridianpb::Peer::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string(n2.port()), grpc::InsecureChannelCredentials()));
  auto send = [&](const meridianpb::RaftMessage& m, const char* from = "1") {
    grpc::ClientContext ctx;
    ctx.AddMetadata("x-meridian-cluster-id", "0000000000000001");
    ctx.AddMetadata("x-meridian-from", from);
    meridianpb::StreamSummary summary;
    auto writer = stub->Stream(&ctx, &summary);
    meridianpb::MessageBatch batch;
    *batch.add_messages() = m;
    writer->Write(batch);
    writer->WritesDone();
    return writer->Finish().error_code();
  };
  meridianpb::RaftMessage good;
  EncodeMessage(Heartbeat(1, 2, 1), &good);
  EXPECT_EQ(send(good), grpc::StatusCode::OK);

  meridianpb::RaftMessage bad = good;
  bad.set_type(static_cast<meridianpb::RaftMessageType>(4242));
  EXPECT_EQ(send(bad), grpc::StatusCode::INVALID_ARGUMENT);
  bad = good;
  bad.set_type(meridianpb::RAFT_MSG_HUP);  // local only
  EXPECT_EQ(send(bad), grpc::StatusCode::INVALID_ARGUMENT);
  bad = good;
  bad.set_from(3);  // not the caller
  EXPECT_EQ(send(bad), grpc::StatusCode::INVALID_ARGUMENT);
  // ...except a proposal or read request a follower forwards on behalf of another member: raft
  // keeps the original sender, to whom the leader answers a read.
  meridianpb::RaftMessage forwarded = good;
  forwarded.set_type(meridianpb::RAFT_MSG_PROP);
  forwarded.set_from(3);
  forwarded.set_term(0);
  EXPECT_EQ(send(forwarded), grpc::StatusCode::OK);
  EXPECT_EQ(send(good, "zz"), grpc::StatusCode::INVALID_ARGUMENT);
  bad = good;
  bad.set_to(5);  // someone else
  EXPECT_EQ(send(bad), grpc::StatusCode::FAILED_PRECONDITION);

  // A snapshot upload that lies about its size leaves no file behind.
  {
    grpc::ClientContext ctx;
    ctx.AddMetadata("x-meridian-cluster-id", "0000000000000001");
    ctx.AddMetadata("x-meridian-from", "1");
    meridianpb::SnapshotAck ack;
    auto writer = stub->SendSnapshot(&ctx, &ack);
    meridianpb::SnapshotChunk chunk;
    EncodeMessage(SnapMessage(1, 2), chunk.mutable_message());
    chunk.set_total_bytes(3);
    chunk.set_data("too long");
    chunk.set_done(true);
    writer->Write(chunk);
    writer->WritesDone();
    EXPECT_EQ(writer->Finish().error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  EXPECT_TRUE(std::filesystem::is_empty(n2.t().options().snapshot_dir));
  n2.Locked([&] {
    EXPECT_EQ(n2.messages_.size(), 2u);  // the good heartbeat and the forwarded proposal
    EXPECT_TRUE(n2.snapshots_.empty());
  });
}

TEST(PeerTransportTest, InboundCallsPastTheCapAreRefusedUntilOneEnds) {
  Node n2(2);
  n2.max_inbound_calls = 8;
  n2.Start();
  auto stub = meridianpb::Peer::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string(n2.port()), grpc::InsecureChannelCredentials()));
  struct OpenStream {
    grpc::ClientContext ctx;
    meridianpb::StreamSummary summary;
    std::unique_ptr<grpc::ClientWriter<meridianpb::MessageBatch>> writer;
  };
  meridianpb::MessageBatch batch;
  EncodeMessage(Heartbeat(1, 2, 1), batch.add_messages());
  auto open = [&] {
    auto s = std::make_unique<OpenStream>();
    s->ctx.AddMetadata("x-meridian-cluster-id", "0000000000000001");
    s->ctx.AddMetadata("x-meridian-from", "1");
    s->writer = stub->Stream(&s->ctx, &s->summary);
    return s;
  };
  // Eight streams are admitted: each delivers a message and stays open.
  std::vector<std::unique_ptr<OpenStream>> streams;
  for (int i = 0; i < 8; ++i) {
    streams.push_back(open());
    ASSERT_TRUE(streams.back()->writer->Write(batch));
    ASSERT_TRUE(n2.WaitFor([&] { return n2.messages_.size() == static_cast<size_t>(i + 1); }));
  }
  // The ninth is refused with the reason.
  auto ninth = open();
  ninth->writer->WritesDone();
  grpc::Status st = ninth->writer->Finish();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(st.error_message().find("inbound peer calls"), std::string::npos) << st.error_message();
  // Once one ends, a new one is admitted again. The server frees the slot when the call is
  // done on its side, which can be just after the client saw the status: a stream opened in that
  // gap is still refused, so this retries (briefly, and only with RESOURCE_EXHAUSTED).
  streams[0]->writer->WritesDone();
  EXPECT_TRUE(streams[0]->writer->Finish().ok());
  bool admitted = false;
  for (int attempt = 0; attempt < 100 && !admitted; ++attempt) {
    auto tenth = open();
    tenth->writer->Write(batch);
    tenth->writer->WritesDone();
    const grpc::Status tenth_status = tenth->writer->Finish();
    admitted = tenth_status.ok();
    if (!admitted) {
      ASSERT_EQ(tenth_status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
          << tenth_status.error_message();
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  ASSERT_TRUE(admitted) << "no stream was admitted after one of the eight ended";
  EXPECT_TRUE(n2.WaitFor([&] { return n2.messages_.size() == 9; }));
  for (size_t i = 1; i < streams.size(); ++i) {
    streams[i]->writer->WritesDone();
    EXPECT_TRUE(streams[i]->writer->Finish().ok());
  }
}

TEST(PeerTransportTest, FetchClusterInfoAsksEachUrlInTurn) {
  Node n1(1, /*cluster_id=*/0x1234), dead(9);
  n1.Start();
  dead.Start();
  const std::string dead_url = dead.url();
  dead.Shutdown();

  absl::StatusOr<meridianpb::ClusterInfoResponse> info =
      PeerTransport::FetchClusterInfo({"https://127.0.0.1:1", dead_url, n1.url()}, 2000);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->cluster_id(), 0x1234u);
  ASSERT_EQ(info->members_size(), 1);
  EXPECT_EQ(info->members(0).id(), 1u);
  EXPECT_EQ(info->members(0).name(), "node1");
  EXPECT_EQ(info->members(0).peer_urls(0), n1.url());
  EXPECT_FALSE(info->members(0).is_learner());

  absl::StatusOr<meridianpb::ClusterInfoResponse> none =
      PeerTransport::FetchClusterInfo({dead_url}, 500);
  EXPECT_EQ(none.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(std::string(none.status().message()).find(dead_url), std::string::npos);
}

}  // namespace
}  // namespace meridian::peer
