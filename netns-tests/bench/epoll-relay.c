// epoll-relay: a measuring probe for netns-tests/bench/tcp-floor, not product code.
//
// The least a user-space TCP relay can do per message: one thread, one epoll set (edge-triggered), recv into one
// buffer and send it on, nothing else (no counters, no timeouts, no backpressure beyond a blocking-free best effort:
// it assumes the peer takes every write, which holds for the benchmark's small request/response messages). Its CPU
// per request is the floor that any user-space proxy (HAProxy, tandem) pays in system calls and kernel TCP work.
//
//   epoll-relay LISTEN_IP LISTEN_PORT UPSTREAM_IP UPSTREAM_PORT SECONDS     (exits after SECONDS)
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "probe.h"

int main(int argc, char **argv) {
  struct probe probe = probe_start(argc, argv);
  struct sockaddr_in upstream = probe.upstream;
  int listener = probe.listener;
  int one = 1;
  int ep = epoll_create1(0);
  struct epoll_event ev = {.events = EPOLLIN, .data.u64 = UINT64_MAX};
  epoll_ctl(ep, EPOLL_CTL_ADD, listener, &ev);
  static char buf[32768];
  for (;;) {
    struct epoll_event events[1024];
    int n = epoll_wait(ep, events, 1024, -1);
    for (int i = 0; i < n; i++) {
      if (events[i].data.u64 == UINT64_MAX) {
        int client = accept4(listener, NULL, NULL, SOCK_NONBLOCK);
        if (client < 0) continue;
        int server = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(server, (struct sockaddr *)&upstream, sizeof upstream)) {
          close(client);
          close(server);
          continue;
        }
        fcntl(server, F_SETFL, O_NONBLOCK);
        setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        setsockopt(server, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct epoll_event c = {.events = EPOLLIN | EPOLLET, .data.u64 = ((uint64_t)client << 32) | (uint32_t)server};
        struct epoll_event s = {.events = EPOLLIN | EPOLLET, .data.u64 = ((uint64_t)server << 32) | (uint32_t)client};
        epoll_ctl(ep, EPOLL_CTL_ADD, client, &c);
        epoll_ctl(ep, EPOLL_CTL_ADD, server, &s);
        continue;
      }
      int fd = (int)(events[i].data.u64 >> 32), peer = (int)(uint32_t)events[i].data.u64;
      for (;;) {
        ssize_t r = recv(fd, buf, sizeof buf, 0);
        if (r > 0) {
          send(peer, buf, (size_t)r, MSG_NOSIGNAL);
          if (r < (ssize_t)sizeof buf) break;
          continue;
        }
        if (r < 0 && (errno == EAGAIN || errno == EINTR)) break;
        close(fd);  // EOF or error: end the pair (the probe needs no half-close)
        close(peer);
        break;
      }
    }
  }
}
