# syntax=docker/dockerfile:1
# etcdbr: a static binary on a distroless base, running as non-root.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.buildVersion=${VERSION}" -o /out/etcdbr ./cmd/etcdbr \
 && ln -s etcdbr /out/etcd \
 && mkdir -p /out/var/lib/etcd

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/etcdbr /usr/local/bin/etcdbr
COPY --from=build /out/etcd /usr/local/bin/etcd
COPY --from=build --chown=65532:65532 /out/var/lib/etcd /var/lib/etcd
USER 65532:65532
# With no flags the data dir is ./default.etcd and backups go to ./default.etcd.backups: mount a
# volume here (or pass --data-dir and --store).
WORKDIR /var/lib/etcd
EXPOSE 2379 2380
# Invoked as `etcd` (e.g. a static pod's command), the same binary takes etcd's flags as they are.
ENTRYPOINT ["etcdbr", "run"]
