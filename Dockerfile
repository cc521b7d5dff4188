# mayfly in a container: a static binary on a distroless base, as a non-root
# user, with the data dir as a volume.
#
#   docker build -t mayfly .
#   docker run --rm -v mayfly:/var/lib/mayfly mayfly init --data-dir /var/lib/mayfly --tls-san mayfly.example.com
#   docker run --rm -i -v mayfly:/var/lib/mayfly mayfly secret put NAME --data-dir /var/lib/mayfly < value.txt   # each secret the policy names
#   docker run -d -p 8443:8443 -v mayfly:/var/lib/mayfly \
#     -v "$PWD/policy.yaml:/etc/mayfly/policy.yaml:ro" mayfly
#
# The build stage runs the same command as the release builds (CGO off,
# -trimpath), so the binary needs no libc.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/mayfly ./cmd/mayfly
# The data dir, empty: copied below owned by the non-root user.
RUN mkdir -m 0700 /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/mayfly /usr/local/bin/mayfly
# 65532 is distroless' "nonroot" user. A named volume takes the owner of the
# image's directory at its first mount; without one here it would be root's,
# and init, run as this user, could not write to it.
COPY --from=build --chown=65532:65532 /out/data /var/lib/mayfly
USER 65532:65532
VOLUME ["/var/lib/mayfly"]
EXPOSE 8443
ENTRYPOINT ["/usr/local/bin/mayfly"]
# In a container the server listens on all interfaces (TLS from the data
# dir); metrics stay on the container's loopback unless --metrics-listen.
CMD ["server", "--data-dir", "/var/lib/mayfly", "--listen", "0.0.0.0:8443", "--policy", "/etc/mayfly/policy.yaml"]
