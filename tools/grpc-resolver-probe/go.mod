// A Go gRPC client for test/integration/grpc-go-resolver.test.ts: grpc-go 1.67 and the newest etcd
// client whose go.mod still allows it (v3.5.21 requires grpc v1.59.0; v3.5.22 and v3.6 require
// v1.71.1). grpc-go 1.67 is pinned because its pick_first panics on a JSON object in
// Address.Metadata (grpc/grpc-go#8225) and it is still widely used; etcd v3.5.21's resolver still
// hands Metadata to grpc-go, as v3.5.0-v3.5.26 and v3.6.0-v3.6.7 do. Licences of everything built
// in: Apache-2.0 (grpc, etcd, genproto, coreos), BSD-3-Clause (golang.org/x, protobuf, gogo) and MIT
// (go.uber.org).
module kube-registrar.dev/tools/grpc-resolver-probe

go 1.23.0

require (
	go.etcd.io/etcd/client/v3 v3.5.21
	go.uber.org/zap v1.17.0
	google.golang.org/grpc v1.67.3
)

require (
	github.com/coreos/go-semver v0.3.0 // indirect
	github.com/coreos/go-systemd/v22 v22.3.2 // indirect
	github.com/gogo/protobuf v1.3.2 // indirect
	github.com/golang/protobuf v1.5.4 // indirect
	go.etcd.io/etcd/api/v3 v3.5.21 // indirect
	go.etcd.io/etcd/client/pkg/v3 v3.5.21 // indirect
	go.uber.org/atomic v1.7.0 // indirect
	go.uber.org/multierr v1.6.0 // indirect
	golang.org/x/net v0.38.0 // indirect
	golang.org/x/sys v0.31.0 // indirect
	golang.org/x/text v0.23.0 // indirect
	google.golang.org/genproto/googleapis/api v0.0.0-20240814211410-ddb44dafa142 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20240814211410-ddb44dafa142 // indirect
	google.golang.org/protobuf v1.34.2 // indirect
)
