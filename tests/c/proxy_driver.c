/*
 * proxy_driver.c - a tiny host for the CONNECT tunnel layer
 * (core/src/proxy.c) over a real socket, used by proxy_tinyproxy.sh.
 *
 *   proxy_driver PROXY_PORT TARGET_HOST TARGET_PORT USER|- PASS|- MESSAGE
 *
 * Connects to 127.0.0.1:PROXY_PORT (loopback only), lets the layer ask for
 * a tunnel to TARGET_HOST:TARGET_PORT, then sends MESSAGE through it and
 * expects the same bytes back (the target is an echo server). Prints
 * "echo ok" and exits 0, or prints the layer's error text and exits 2 (1
 * for local failures). Every wait is bounded by poll() with a 5 s timeout.
 * This file is a host: it owns the socket; the layer never touches it.
 */
#include "proxy.h"

#include <sbus/sbus.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int connect_loopback(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Writes all of the layer's down FIFO to the socket. */
static int flush_down(int fd, sbusi_layer_t *l)
{
    while (sbusi_fifo_len(&l->down)) {
        ssize_t k = write(fd, sbusi_fifo_data(&l->down), sbusi_fifo_len(&l->down));
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        sbusi_fifo_consume(&l->down, (size_t)k);
    }
    return 0;
}

/* Reads once (5 s at most) and feeds the layer. 0, 1 at end of stream,
 * -1 on timeout or socket error, or the layer's error code. */
static int read_once(int fd, sbusi_layer_t *l)
{
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, 5000) <= 0)
        return -1;
    uint8_t buf[4096];
    ssize_t k = read(fd, buf, sizeof buf);
    if (k < 0)
        return -1;
    if (k == 0) {
        int rc = sbusi_layer_eof(l);
        return rc < 0 ? rc : 1;
    }
    size_t used = 0;
    int rc = sbusi_layer_input(l, buf, (size_t)k, &used);
    return rc < 0 ? rc : 0;
}

static int run(int fd, sbusi_layer_t *l, const char *msg)
{
    size_t n = strlen(msg), used = 0;
    /* offered before the tunnel is up: the layer holds it */
    if (sbusi_layer_output(l, (const uint8_t *)msg, n, &used) < 0 || used != n)
        return 1;
    if (flush_down(fd, l) < 0)
        return 1;
    while (sbusi_fifo_len(&l->up) < n) {
        int rc = read_once(fd, l);
        if (rc < 0 && l->state == SBUSI_LAYER_ERROR) {
            printf("%s\n", l->text);
            return 2;
        }
        if (rc != 0) {
            printf("no echo (%s)\n", rc == 1 ? "end of stream" : "timeout");
            return 1;
        }
        if (flush_down(fd, l) < 0)
            return 1;
    }
    if (memcmp(sbusi_fifo_data(&l->up), msg, n) != 0) {
        printf("echo differs\n");
        return 1;
    }
    printf("echo ok (proxy status %d)\n", sbusi_proxy_status(l));
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 7) {
        fprintf(stderr, "usage: %s PROXY_PORT HOST PORT USER|- PASS|- MSG\n",
                argv[0]);
        return 1;
    }
    sbusi_proxy_opts_t o;
    sbusi_proxy_opts_init(&o);
    o.host = argv[2];
    o.port = (uint16_t)atoi(argv[3]);
    o.username = strcmp(argv[4], "-") ? argv[4] : NULL;
    o.password = strcmp(argv[5], "-") ? argv[5] : NULL;
    sbusi_layer_t *l = NULL;
    if (sbusi_proxy_new(&o, &l) < 0) {
        fprintf(stderr, "bad options\n");
        return 1;
    }
    int fd = connect_loopback(atoi(argv[1]));
    if (fd < 0) {
        fprintf(stderr, "cannot connect to the proxy\n");
        sbusi_layer_free(l);
        return 1;
    }
    int rc = run(fd, l, argv[6]);
    close(fd);
    sbusi_layer_free(l);
    return rc;
}
