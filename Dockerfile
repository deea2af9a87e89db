# One image for every binary: build them all, ship them on distroless.
#
#   docker build -t stormweir .
#   docker run --rm -p 8080:8080 stormweir        # stormweir run: the whole
#                                                  # pipeline, CRs printed
#
# docker-compose.yml runs the distributed pipeline from this image, picking
# the stage binary per service with its entrypoint. Plain Dockerfile syntax
# (no BuildKit-only instructions), so the classic builder builds it too.
FROM golang:1.26 AS build
WORKDIR /src
# Modules first: the download layer is reused until go.mod or go.sum change.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# Static binaries (no cgo) for an image without libc: receiver, deduper,
# aggregator, writer and stormweir.
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/ ./cmd/...

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/ /usr/local/bin/
USER nonroot:nonroot
# stormweir run keeps its JetStream store and generated token in ./data;
# the nonroot user can write here, not in /.
WORKDIR /home/nonroot
# 8080: webhooks (receiver, stormweir run); 9090: health and metrics of the
# deduper, aggregator and writer.
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/stormweir"]
CMD ["run"]
