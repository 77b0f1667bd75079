// etcd's client-facing errors: the gRPC code and message etcd sends for each (etcd's
// api/v3rpc/rpctypes), so that clientv3 and etcdctl map them to the same Go errors.
#pragma once

#include <grpcpp/support/status.h>

#include <string>

#include "absl/status/status.h"

namespace meridian::server {

#define MERIDIAN_ETCD_ERROR(name, code, msg) \
  inline grpc::Status name() { return grpc::Status(grpc::StatusCode::code, msg); }

MERIDIAN_ETCD_ERROR(ErrEmptyKey, INVALID_ARGUMENT, "etcdserver: key is not provided")
MERIDIAN_ETCD_ERROR(ErrKeyNotFound, INVALID_ARGUMENT, "etcdserver: key not found")
MERIDIAN_ETCD_ERROR(ErrValueProvided, INVALID_ARGUMENT, "etcdserver: value is provided")
MERIDIAN_ETCD_ERROR(ErrLeaseProvided, INVALID_ARGUMENT, "etcdserver: lease is provided")
MERIDIAN_ETCD_ERROR(ErrTooManyOps, INVALID_ARGUMENT,
                    "etcdserver: too many operations in txn request")
MERIDIAN_ETCD_ERROR(ErrDuplicateKey, INVALID_ARGUMENT,
                    "etcdserver: duplicate key given in txn request")
MERIDIAN_ETCD_ERROR(ErrCompacted, OUT_OF_RANGE,
                    "etcdserver: mvcc: required revision has been compacted")
MERIDIAN_ETCD_ERROR(ErrFutureRev, OUT_OF_RANGE,
                    "etcdserver: mvcc: required revision is a future revision")
MERIDIAN_ETCD_ERROR(ErrNoSpace, RESOURCE_EXHAUSTED, "etcdserver: mvcc: database space exceeded")
MERIDIAN_ETCD_ERROR(ErrLeaseNotFound, NOT_FOUND, "etcdserver: requested lease not found")
MERIDIAN_ETCD_ERROR(ErrLeaseExist, FAILED_PRECONDITION, "etcdserver: lease already exists")
MERIDIAN_ETCD_ERROR(ErrLeaseTTLTooLarge, OUT_OF_RANGE, "etcdserver: too large lease TTL")
MERIDIAN_ETCD_ERROR(ErrRequestTooLarge, INVALID_ARGUMENT, "etcdserver: request is too large")
MERIDIAN_ETCD_ERROR(ErrTooManyRequests, RESOURCE_EXHAUSTED, "etcdserver: too many requests")
MERIDIAN_ETCD_ERROR(ErrStopped, UNAVAILABLE, "etcdserver: server stopped")
MERIDIAN_ETCD_ERROR(ErrTimeout, UNAVAILABLE, "etcdserver: request timed out")
MERIDIAN_ETCD_ERROR(ErrNoLeader, UNAVAILABLE, "etcdserver: no leader")
MERIDIAN_ETCD_ERROR(ErrMemberNotFound, NOT_FOUND, "etcdserver: member not found")
MERIDIAN_ETCD_ERROR(ErrNotLeader, FAILED_PRECONDITION, "etcdserver: not leader")
MERIDIAN_ETCD_ERROR(ErrLeaderChanged, UNAVAILABLE, "etcdserver: leader changed")
MERIDIAN_ETCD_ERROR(ErrTimeoutLeaderTransfer, DEADLINE_EXCEEDED,
                    "etcdserver: request timed out, leader transfer took too long")
MERIDIAN_ETCD_ERROR(ErrBadLeaderTransferee, FAILED_PRECONDITION,
                    "etcdserver: bad leader transferee")
MERIDIAN_ETCD_ERROR(ErrMemberExist, FAILED_PRECONDITION, "etcdserver: member ID already exist")
MERIDIAN_ETCD_ERROR(ErrPeerURLExist, FAILED_PRECONDITION, "etcdserver: Peer URLs already exists")
MERIDIAN_ETCD_ERROR(ErrMemberBadURLs, INVALID_ARGUMENT, "etcdserver: given member URLs are invalid")
MERIDIAN_ETCD_ERROR(ErrMemberNotLearner, FAILED_PRECONDITION,
                    "etcdserver: can only promote a learner member")
MERIDIAN_ETCD_ERROR(ErrLearnerNotReady, FAILED_PRECONDITION,
                    "etcdserver: can only promote a learner member which is in sync with leader")
MERIDIAN_ETCD_ERROR(ErrTooManyLearners, FAILED_PRECONDITION,
                    "etcdserver: too many learner members in cluster")
MERIDIAN_ETCD_ERROR(ErrUnhealthy, UNAVAILABLE, "etcdserver: unhealthy cluster")
MERIDIAN_ETCD_ERROR(ErrNotSupportedForLearner, UNAVAILABLE,
                    "etcdserver: rpc not supported for learner")
MERIDIAN_ETCD_ERROR(ErrNotCapable, UNAVAILABLE, "etcdserver: not capable")

#undef MERIDIAN_ETCD_ERROR

// Maps a store-level absl::Status to the gRPC status etcd would send.
grpc::Status ToGrpc(const absl::Status& s);

}  // namespace meridian::server
