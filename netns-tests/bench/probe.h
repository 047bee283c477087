// probe.h: what the tcp-floor probes share: their arguments, the bound on their run time, the listening socket.
#ifndef TANDEM_PROBE_H
#define TANDEM_PROBE_H
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

struct probe {
  int listener;
  struct sockaddr_in upstream;
};

// Reads LISTEN_IP LISTEN_PORT UPSTREAM_IP UPSTREAM_PORT SECONDS, arms the alarm that ends the probe after SECONDS
// (SIGALRM), and listens. Exits with 2 on bad arguments, 1 when it cannot listen.
static struct probe probe_start(int argc, char **argv) {
  if (argc != 6) {
    fprintf(stderr, "usage: %s LISTEN_IP LISTEN_PORT UPSTREAM_IP UPSTREAM_PORT SECONDS\n", argv[0]);
    exit(2);
  }
  struct probe p = {.upstream = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[4]))}};
  struct sockaddr_in listen_at = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
  if (inet_pton(AF_INET, argv[1], &listen_at.sin_addr) != 1 || inet_pton(AF_INET, argv[3], &p.upstream.sin_addr) != 1) {
    fprintf(stderr, "bad address\n");
    exit(2);
  }
  alarm((unsigned)atoi(argv[5]));
  int one = 1;
  p.listener = socket(AF_INET, SOCK_STREAM, 0);
  setsockopt(p.listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(p.listener, (struct sockaddr *)&listen_at, sizeof listen_at) || listen(p.listener, 1024)) {
    perror("listen");
    exit(1);
  }
  return p;
}
#endif
