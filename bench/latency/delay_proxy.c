/*
 * A TCP proxy on loopback that adds a round-trip time to everything: the C
 * build of bench/latency/delay_proxy.py, same options, same model.
 *
 *   build/bench/delay_proxy --rtt-ms 20 --upstream PORT [--port 0]
 *                           [--max-seconds 900] [--stats F.json]
 *
 * Every byte is delivered RTT/2 after it arrived, in each direction, but
 * none from the client before one RTT after the connection was accepted:
 * bytes from the client go out at max(arrival, accept + RTT) + RTT/2. The
 * TCP handshake that a connect() to loopback skips starts at connect(), not
 * at the first write, so a connection opened early (pre-connected) has it
 * done by the time its first bytes come. Bandwidth is not limited.
 * Listens on 127.0.0.1 only and connects to 127.0.0.1:UPSTREAM only. Stops
 * when its standard input reaches end of file, on SIGTERM/SIGINT, or after
 * --max-seconds. Prints "listening PORT" once it accepts connections.
 *
 * Why C as well as Python: on a busy 2-core host the Python proxy's
 * deliveries were 0.3 ms late at the median, and a keep-alive request at
 * 20 ms RTT took 21.5-22.5 ms through it; through this one 0.05 ms and
 * 20.7 ms. One thread, epoll, and a timerfd armed for the earliest delivery
 * (nanosecond resolution). bench/bench.sh builds it into build/bench/.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define CHUNK 65536

struct chunk {
    struct chunk *next;
    double due;
    size_t len, off;
    int eof;                    /* the end of the stream, delivered late too */
    unsigned char data[];
};

struct dir {                    /* one direction: read from src, queued, written to dst */
    int src, dst;
    double delay, not_before;
    struct chunk *head, *tail;
    int read_done;              /* src reached EOF or failed */
    int write_done;             /* EOF passed on, or dst failed */
    int blocked;                /* dst was full: waiting for EPOLLOUT */
};

struct conn {
    struct conn *next;
    int cfd, ufd;
    unsigned cev, uev;          /* the events each socket is registered for (0: not) */
    struct dir up, down;        /* client -> upstream, upstream -> client */
};

/* what an epoll event's data points at */
struct tag { int kind; struct conn *c; };
enum { T_LISTEN, T_STDIN, T_TIMER, T_CLIENT, T_UPSTREAM };

static int ep, tfd;
static struct conn *conns;
static double *late;
static size_t nlate, caplate;
static volatile sig_atomic_t stopping;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void on_signal(int sig)
{
    (void)sig;
    stopping = 1;
}

static void note_late(double d)
{
    if (nlate == caplate) {
        size_t cap = caplate ? caplate * 2 : 4096;
        double *p = realloc(late, cap * sizeof *p);
        if (p == NULL)
            return;
        late = p;
        caplate = cap;
    }
    late[nlate++] = d;
}

static void nonblock(int fd)
{
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

static void watch(int fd, unsigned events, struct tag *t, int op)
{
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = events;
    ev.data.ptr = t;
    epoll_ctl(ep, op, fd, &ev);
}

static struct tag *tag_of(struct conn *c, int kind);

/* A socket is watched for input while its reading direction reads, and for
   output while the direction writing to it is blocked. With neither it is
   taken out of the set: epoll reports a hang-up even for no events. */
static void watch_socket(int fd, unsigned *reg, unsigned want, struct tag *t)
{
    if (want == *reg)
        return;
    if (want == 0)
        epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
    else
        watch(fd, want, t, *reg ? EPOLL_CTL_MOD : EPOLL_CTL_ADD);
    *reg = want;
}

static void update(struct conn *c)
{
    unsigned ce = 0, ue = 0;
    if (!c->up.read_done) ce |= EPOLLIN;
    if (c->down.blocked) ce |= EPOLLOUT;
    if (!c->down.read_done) ue |= EPOLLIN;
    if (c->up.blocked) ue |= EPOLLOUT;
    watch_socket(c->cfd, &c->cev, ce, tag_of(c, T_CLIENT));
    watch_socket(c->ufd, &c->uev, ue, tag_of(c, T_UPSTREAM));
}

/* each conn carries its two tags right after it */
struct conn_alloc { struct conn c; struct tag t[2]; };

static struct tag *tag_of(struct conn *c, int kind)
{
    struct conn_alloc *a = (struct conn_alloc *)c;
    return &a->t[kind == T_CLIENT ? 0 : 1];
}

static void push(struct dir *d, const unsigned char *buf, size_t len, int eof)
{
    struct chunk *k = malloc(sizeof *k + len);
    if (k == NULL) {
        d->read_done = d->write_done = 1;
        return;
    }
    double t = now();
    k->next = NULL;
    k->due = (t > d->not_before ? t : d->not_before) + d->delay;
    k->len = len;
    k->off = 0;
    k->eof = eof;
    if (len)
        memcpy(k->data, buf, len);
    if (d->tail)
        d->tail->next = k;
    else
        d->head = k;
    d->tail = k;
}

static void drop_queue(struct dir *d)
{
    while (d->head) {
        struct chunk *k = d->head;
        d->head = k->next;
        free(k);
    }
    d->tail = NULL;
}

static void read_side(struct conn *c, struct dir *d)
{
    static unsigned char buf[CHUNK];
    for (;;) {
        ssize_t n = read(d->src, buf, sizeof buf);
        if (n > 0) {
            push(d, buf, (size_t)n, 0);
            if ((size_t)n < sizeof buf)
                break;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            break;
        } else {                /* EOF or error: pass the end on, late */
            d->read_done = 1;
            push(d, NULL, 0, 1);
            break;
        }
    }
    update(c);
}

/* writes what is due, in order, until the destination is full */
static void deliver(struct conn *c, struct dir *d, double t)
{
    while (d->head && !d->blocked && d->head->due <= t) {
        struct chunk *k = d->head;
        if (k->off == 0)
            note_late(t - k->due);
        if (k->eof) {
            shutdown(d->dst, SHUT_WR);
            d->write_done = 1;
        } else if (!d->write_done) {
            ssize_t n = write(d->dst, k->data + k->off, k->len - k->off);
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                d->blocked = 1;
                update(c);
                return;
            }
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0) {        /* the peer is gone: nothing more goes this way */
                d->write_done = 1;
                drop_queue(d);
                return;
            }
            k->off += (size_t)n;
            if (k->off < k->len)
                continue;
        }
        d->head = k->next;
        if (d->head == NULL)
            d->tail = NULL;
        free(k);
    }
}

static void close_conn(struct conn *c)
{
    struct conn **p = &conns;
    while (*p && *p != c)
        p = &(*p)->next;
    if (*p)
        *p = c->next;
    if (c->cev)
        epoll_ctl(ep, EPOLL_CTL_DEL, c->cfd, NULL);
    if (c->uev)
        epoll_ctl(ep, EPOLL_CTL_DEL, c->ufd, NULL);
    close(c->cfd);
    close(c->ufd);
    drop_queue(&c->up);
    drop_queue(&c->down);
    free(c);
}

static void accept_one(int lfd, double rtt, int upstream)
{
    int cfd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (cfd < 0)
        return;
    double accepted = now();
    int ufd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)upstream);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (ufd < 0 || connect(ufd, (struct sockaddr *)&a, sizeof a) != 0) {
        if (ufd >= 0)
            close(ufd);
        close(cfd);
        return;
    }
    nonblock(ufd);
    int one = 1;
    setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(ufd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct conn_alloc *ca = calloc(1, sizeof *ca);
    if (ca == NULL) {
        close(cfd);
        close(ufd);
        return;
    }
    struct conn *c = &ca->c;
    c->cfd = cfd;
    c->ufd = ufd;
    c->up = (struct dir){ .src = cfd, .dst = ufd, .delay = rtt / 2, .not_before = accepted + rtt };
    c->down = (struct dir){ .src = ufd, .dst = cfd, .delay = rtt / 2, .not_before = 0 };
    ca->t[0] = (struct tag){ T_CLIENT, c };
    ca->t[1] = (struct tag){ T_UPSTREAM, c };
    c->next = conns;
    conns = c;
    update(c);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void write_stats(const char *path)
{
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return;
    if (nlate)
        qsort(late, nlate, sizeof *late, cmp_double);
    double med = nlate ? late[nlate / 2] : 0, p99 = nlate ? late[(size_t)((double)nlate * 0.99)] : 0;
    double max = nlate ? late[nlate - 1] : 0;
    fprintf(f, "{\"deliveries\": %zu, \"median_ms\": %.4f, \"p99_ms\": %.4f, \"max_ms\": %.4f}\n",
            nlate, med * 1000, p99 * 1000, max * 1000);
    fclose(f);
}

static void usage(void)
{
    fprintf(stderr, "usage: delay_proxy --rtt-ms MS --upstream PORT [--port 0] [--max-seconds 900] "
                    "[--stats FILE]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    double rtt = -1, max_seconds = 900;
    int upstream = 0, port = 0;
    const char *stats = NULL;
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc)
            usage();
        if (strcmp(argv[i], "--rtt-ms") == 0)
            rtt = atof(argv[++i]) / 1000;
        else if (strcmp(argv[i], "--upstream") == 0)
            upstream = atoi(argv[++i]);
        else if (strcmp(argv[i], "--port") == 0)
            port = atoi(argv[++i]);
        else if (strcmp(argv[i], "--max-seconds") == 0)
            max_seconds = atof(argv[++i]);
        else if (strcmp(argv[i], "--stats") == 0)
            stats = argv[++i];
        else
            usage();
    }
    if (rtt < 0 || upstream <= 0)
        usage();

    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof a;
    if (bind(lfd, (struct sockaddr *)&a, sizeof a) != 0 || listen(lfd, 512) != 0 ||
        getsockname(lfd, (struct sockaddr *)&a, &alen) != 0) {
        perror("delay_proxy: listen");
        return 1;
    }
    ep = epoll_create1(EPOLL_CLOEXEC);
    tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (ep < 0 || tfd < 0) {
        perror("delay_proxy: epoll/timerfd");
        return 1;
    }
    static struct tag t_listen = { T_LISTEN, NULL }, t_stdin = { T_STDIN, NULL }, t_timer = { T_TIMER, NULL };
    watch(lfd, EPOLLIN, &t_listen, EPOLL_CTL_ADD);
    watch(tfd, EPOLLIN, &t_timer, EPOLL_CTL_ADD);
    /* a pipe from the parent: its end of file is the signal to stop (epoll
       refuses regular files and /dev/null; then only the time limit stops it) */
    watch(0, EPOLLIN, &t_stdin, EPOLL_CTL_ADD);
    printf("listening %d\n", ntohs(a.sin_port));
    fflush(stdout);

    double deadline = now() + max_seconds;
    while (!stopping && now() < deadline) {
        /* deliver what is due; arm the timer for the next delivery */
        double t = now(), next = deadline;
        for (struct conn *c = conns, *n; c; c = n) {
            n = c->next;
            deliver(c, &c->up, t);
            deliver(c, &c->down, t);
            /* both ends have closed and everything has been passed on */
            if (c->up.read_done && !c->up.head && c->down.read_done && !c->down.head) {
                close_conn(c);
                continue;
            }
            if (c->up.head && !c->up.blocked && c->up.head->due < next)
                next = c->up.head->due;
            if (c->down.head && !c->down.blocked && c->down.head->due < next)
                next = c->down.head->due;
        }
        struct itimerspec its;
        memset(&its, 0, sizeof its);
        if (next <= t)
            next = t + 1e-6;
        its.it_value.tv_sec = (time_t)next;
        its.it_value.tv_nsec = (long)((next - (double)(time_t)next) * 1e9);
        timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL);

        struct epoll_event evs[64];
        int n = epoll_wait(ep, evs, 64, 1000);
        for (int i = 0; i < n; i++) {
            struct tag *tg = evs[i].data.ptr;
            if (tg->kind == T_LISTEN) {
                for (int k = 0; k < 64; k++)
                    accept_one(lfd, rtt, upstream);
            } else if (tg->kind == T_STDIN) {
                char b[256];
                ssize_t r = read(0, b, sizeof b);
                if (r <= 0 && !(r < 0 && errno == EINTR))
                    stopping = 1;
            } else if (tg->kind == T_TIMER) {
                unsigned long long expirations;
                if (read(tfd, &expirations, sizeof expirations) < 0) { /* nothing: re-armed above */ }
            } else {
                struct conn *c = tg->c;
                struct dir *rd = tg->kind == T_CLIENT ? &c->up : &c->down;   /* reads this socket */
                struct dir *wr = tg->kind == T_CLIENT ? &c->down : &c->up;   /* writes to it */
                if ((evs[i].events & EPOLLOUT) && wr->blocked) {
                    wr->blocked = 0;
                    update(c);
                }
                if ((evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && !rd->read_done)
                    read_side(c, rd);
            }
        }
    }
    while (conns)
        close_conn(conns);
    if (stats)
        write_stats(stats);
    return 0;
}
