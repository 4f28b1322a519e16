// Package docker runs tandem's instances as Docker containers, through the
// Engine API (github.com/moby/moby/client, pinned to API 1.41, Docker 20.10
// and later).
//
// A container is made from runtime.image: runtime.command replaces the
// image's entrypoint, runtime.args its command, runtime.env and tandem's own
// variables are added to its environment, and resources become the engine's
// limits (Memory with no extra swap, NanoCPUs, GPU device requests when the
// engine has an NVIDIA runtime). Every container carries the labels of
// package backend plus tandem.data-dir, and is named
// tandem-<hash of the data dir>-<instance id>, so that an instance is never
// started twice and two tandem processes can share an engine.
//
// Networking: by default the container port (runtime.port, else 8080, passed
// as $PORT) is published on 127.0.0.1 with a host port the engine picks; the
// program must then listen on all of the container's interfaces. With
// runtime.network: host the container shares the host's network, $PORT is a
// free host port (or runtime.port), and the program may listen on 127.0.0.1.
// An engine started with --bridge=none publishes nothing; Start then fails
// and says to use host networking.
//
// # Who owns what
//
// Backend.mu guards the instance map, each instance's exit, kept log lines
// and waiters, and the closed flag; it is never held across an engine call.
// Each tracked container has one watcher goroutine, started by Start or
// Recover, which alone decides that the container has ended: it waits on the
// engine's wait API, reads the final state (exit code, OOMKilled) and the
// last log lines, removes the container, then records the exit and closes
// the instance's done channel under the mutex. Stop only asks the engine
// (stop, then kill after grace) and waits for done, so a container that
// crashes while being stopped is reported once. Close cancels the watchers'
// context and waits for them, leaving containers running for Recover.
package docker
