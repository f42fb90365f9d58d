# tagpush: a static binary on distroless/static (CA certificates, no shell).
# Build: docker build --build-arg VERSION=v1.2.3 -t tagpush .
FROM golang:1.26-bookworm AS build
WORKDIR /src
# Module downloads get their own layer: a code change does not download again.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/tagpush .

FROM gcr.io/distroless/static-debian12
COPY --from=build /out/tagpush /usr/local/bin/tagpush
# No USER: GitHub runs container actions as root so they can write the file
# commands under /github/file_commands.
ENTRYPOINT ["/usr/local/bin/tagpush"]
