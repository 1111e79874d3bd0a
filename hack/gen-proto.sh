#!/usr/bin/env bash
# Regenerates the Go code of proto/ (committed). Needs protoc, protoc-gen-go
# and protoc-gen-go-grpc; `make proto` installs the Go plugins at the pinned
# versions below.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$(go env GOPATH)/bin:$PATH"
go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
protoc -I proto \
  --go_out=proto --go_opt=paths=source_relative \
  --go-grpc_out=proto --go-grpc_opt=paths=source_relative \
  proto/oneinfra/v1/*.proto
