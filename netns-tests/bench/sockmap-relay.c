// sockmap-relay: a measuring probe for netns-tests/bench/tcp-floor, not product code.
//
// A TCP relay that moves no byte in user space: every accepted client socket and its upstream socket go into a
// BPF sockhash whose SK_SKB verdict program redirects each received skb to the egress of the paired socket
// (bpf_sk_redirect_hash keyed by the receiving socket's cookie; SK_PASS when no pair is registered). It answers
// one question: would an in-kernel relay beat a user-space proxy (HAProxy, tandem) in CPU per request? It leaves
// out what a product needs (no byte counters, no idle timeouts, close = close both) and it has no backpressure:
// the kernel queues redirected skbs on the peer without a bound (net/core/skmsg.c, sk_psock_skb_redirect), so a
// fast client and a slow server grow kernel memory without limit. That alone keeps it out of tandem.
//
//   sockmap-relay LISTEN_IP LISTEN_PORT UPSTREAM_IP UPSTREAM_PORT SECONDS     (root; exits after SECONDS)
//
// The BPF program is written as raw instructions (12 of them) so the probe needs only gcc and the kernel headers.
#include <arpa/inet.h>
#include <errno.h>
#include <linux/bpf.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "probe.h"

static long bpf(int cmd, union bpf_attr *attr) { return syscall(__NR_bpf, cmd, attr, sizeof(*attr)); }

#define INSN(c, d, s, o, i) ((struct bpf_insn){.code = (c), .dst_reg = (d), .src_reg = (s), .off = (o), .imm = (i)})

static int sockhash_put(int map, uint64_t key, int fd) {
  uint64_t value = (uint64_t)fd;
  union bpf_attr a;
  memset(&a, 0, sizeof a);
  a.map_fd = map;
  a.key = (uintptr_t)&key;
  a.value = (uintptr_t)&value;
  a.flags = BPF_ANY;
  return (int)bpf(BPF_MAP_UPDATE_ELEM, &a);
}

static uint64_t cookie_of(int fd) {
  uint64_t cookie = 0;
  socklen_t len = sizeof cookie;
  getsockopt(fd, SOL_SOCKET, SO_COOKIE, &cookie, &len);
  return cookie;
}

int main(int argc, char **argv) {
  struct probe probe = probe_start(argc, argv);
  struct sockaddr_in upstream = probe.upstream;
  int listener = probe.listener;

  union bpf_attr a;
  memset(&a, 0, sizeof a);
  a.map_type = BPF_MAP_TYPE_SOCKHASH;
  a.key_size = 8;  // the receiving socket's cookie
  a.value_size = 8;
  a.max_entries = 65536;
  int map = (int)bpf(BPF_MAP_CREATE, &a);
  if (map < 0) {
    perror("BPF_MAP_CREATE");
    return 1;
  }
  // key = bpf_get_socket_cookie(skb); r0 = bpf_sk_redirect_hash(skb, map, &key, 0); return r0 ?: SK_PASS
  struct bpf_insn prog[] = {
      INSN(BPF_ALU64 | BPF_MOV | BPF_X, 6, 1, 0, 0),
      INSN(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_get_socket_cookie),
      INSN(BPF_STX | BPF_MEM | BPF_DW, 10, 0, -8, 0),
      INSN(BPF_ALU64 | BPF_MOV | BPF_X, 1, 6, 0, 0),
      INSN(BPF_LD | BPF_IMM | BPF_DW, 2, BPF_PSEUDO_MAP_FD, 0, map),
      INSN(0, 0, 0, 0, 0),
      INSN(BPF_ALU64 | BPF_MOV | BPF_X, 3, 10, 0, 0),
      INSN(BPF_ALU64 | BPF_ADD | BPF_K, 3, 0, 0, -8),
      INSN(BPF_ALU64 | BPF_MOV | BPF_K, 4, 0, 0, 0),
      INSN(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_sk_redirect_hash),
      INSN(BPF_JMP | BPF_JNE | BPF_K, 0, 0, 1, 0),
      INSN(BPF_ALU64 | BPF_MOV | BPF_K, 0, 0, 0, SK_PASS),
      INSN(BPF_JMP | BPF_EXIT, 0, 0, 0, 0),
  };
  static char verifier_log[65536];
  memset(&a, 0, sizeof a);
  a.prog_type = BPF_PROG_TYPE_SK_SKB;
  a.insns = (uintptr_t)prog;
  a.insn_cnt = sizeof prog / sizeof prog[0];
  a.license = (uintptr_t) "GPL";
  a.log_buf = (uintptr_t)verifier_log;
  a.log_size = sizeof verifier_log;
  a.log_level = 1;
  a.expected_attach_type = BPF_SK_SKB_VERDICT;
  int prog_fd = (int)bpf(BPF_PROG_LOAD, &a);
  if (prog_fd < 0) {
    perror("BPF_PROG_LOAD");
    fprintf(stderr, "%s\n", verifier_log);
    return 1;
  }
  memset(&a, 0, sizeof a);
  a.target_fd = map;
  a.attach_bpf_fd = prog_fd;
  a.attach_type = BPF_SK_SKB_VERDICT;
  if (bpf(BPF_PROG_ATTACH, &a) < 0) {
    perror("BPF_PROG_ATTACH");
    return 1;
  }

  int one = 1;
  int ep = epoll_create1(0);
  struct epoll_event ev = {.events = EPOLLIN, .data.u64 = UINT64_MAX};
  epoll_ctl(ep, EPOLL_CTL_ADD, listener, &ev);
  fprintf(stderr, "sockmap-relay: ready\n");
  unsigned long redirected_pairs = 0, failed_pairs = 0;
  for (;;) {
    struct epoll_event events[64];
    int n = epoll_wait(ep, events, 64, -1);
    for (int i = 0; i < n; i++) {
      if (events[i].data.u64 == UINT64_MAX) {
        int client = accept(listener, NULL, NULL);
        if (client < 0) continue;
        int server = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(server, (struct sockaddr *)&upstream, sizeof upstream)) {
          close(client);
          close(server);
          continue;
        }
        setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        setsockopt(server, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        // The server socket is registered first under the client's cookie: the client's data finds its pair from
        // the moment the client socket gets the program.
        if (sockhash_put(map, cookie_of(client), server) || sockhash_put(map, cookie_of(server), client)) {
          failed_pairs++;
        } else {
          redirected_pairs++;
        }
        // Data that arrived before the sockets had the program waits for the next data_ready: SO_RCVLOWAT makes
        // the kernel run it now (tcp_set_rcvlowat -> tcp_data_ready).
        setsockopt(client, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof one);
        setsockopt(server, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof one);
        // Only hang-ups wake us (EPOLLIN would fire for every redirected message).
        struct epoll_event c = {.events = EPOLLRDHUP, .data.u64 = ((uint64_t)client << 32) | (uint32_t)server};
        struct epoll_event s = {.events = EPOLLRDHUP, .data.u64 = ((uint64_t)server << 32) | (uint32_t)client};
        epoll_ctl(ep, EPOLL_CTL_ADD, client, &c);
        epoll_ctl(ep, EPOLL_CTL_ADD, server, &s);
      } else {
        int fd = (int)(events[i].data.u64 >> 32), peer = (int)(uint32_t)events[i].data.u64;
        epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
        epoll_ctl(ep, EPOLL_CTL_DEL, peer, NULL);
        close(fd);
        close(peer);
        fprintf(stderr, "sockmap-relay: pairs redirected %lu, failed %lu\n", redirected_pairs, failed_pairs);
      }
    }
  }
}
