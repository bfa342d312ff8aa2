/* Syscall tracing for odiglet: for the processes user space names in `traced`, every TCP
 * connection accepted or opened, the bytes that cross it (the first `capture` bytes of each
 * call) and its close; for every process, exec and exit. Everything goes to one ring buffer,
 * where user space assembles spans. A process that is not traced costs one map lookup. The
 * children a traced process forks are traced from their first instruction, with the
 * connections they inherit. */
#include "bpf.h"

char LICENSE[] SEC("license") = "GPL";

/* A power of two: reads are bounded with a mask the verifier understands. */
#define MAX_CAPTURE 1024
#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define EINPROGRESS 115
#define F_DUPFD 0
#define F_DUPFD_CLOEXEC 1030

enum kind { EV_EXEC = 1, EV_EXIT, EV_ACCEPT, EV_CONNECT, EV_RECV, EV_SEND, EV_CLOSE, EV_DUP, EV_FORK };
enum buffer { PLAIN, IOVEC, MSGHDR };

/* Every event starts with this head; user space reads it at fixed offsets. */
struct head {
    u8 kind;
    u8 pad[3];
    u32 tgid;
    u32 tid;
    s32 fd;
    u64 at; /* when the call returned (or the event happened), ns since boot */
    s64 ret;
};

struct conn_event {
    struct head h;
    u16 family;
    u16 local_port;
    u16 remote_port;
    u16 pad;
    u8 local_addr[16];
    u8 remote_addr[16];
};

struct data_event {
    struct head h;
    u32 captured;
    u32 pad;
    u8 data[MAX_CAPTURE];
};

/* Traced processes: tgid -> bytes to capture per call. */
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 8192);
    __type(key, u32);
    __type(value, u32);
} traced SEC(".maps");

/* Open TCP connections of traced processes: tgid << 32 | fd -> EV_ACCEPT or EV_CONNECT. */
struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 65536);
    __type(key, u64);
    __type(value, u8);
} conns SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 4 << 20);
} events SEC(".maps");

/* The reader is woken once per this many data events of a CPU, and drains the ring on a
 * timer of its own as well: a busy process costs one wake-up per hundreds of events, not one
 * each. At most 512 KiB wait per CPU, well within the ring. */
#define WAKE_EVERY 512

/* Per CPU: the data event being built, copied to the ring at the size of what it captured
 * (most calls carry far less than MAX_CAPTURE), and the data events sent since the reader
 * was last woken. */
struct cpu_state {
    u32 unwoken;
    u32 pad;
    struct data_event event;
};

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, u32);
    __type(value, struct cpu_state);
} cpu_state SEC(".maps");

/* Events the ring buffer had no room for: counted, so that a loss shows in odiglet's health. */
struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, u32);
    __type(value, u64);
} lost SEC(".maps");

static __always_inline void count_lost(void)
{
    u32 zero = 0;
    u64 *count = bpf_map_lookup_elem(&lost, &zero);
    if (count)
        *count += 1;
}

static __always_inline void *reserve(u64 size)
{
    void *event = bpf_ringbuf_reserve(&events, size, 0);
    if (!event)
        count_lost();
    return event;
}

static __always_inline u32 *capture_of(u64 id)
{
    u32 tgid = id >> 32;
    return bpf_map_lookup_elem(&traced, &tgid);
}

static __always_inline u64 conn_key(u64 id, s64 fd)
{
    return (id & 0xffffffff00000000ULL) | (u32)fd;
}

static __always_inline void fill_head(struct head *h, u8 kind, u64 id, s64 fd, s64 ret)
{
    h->kind = kind;
    h->pad[0] = h->pad[1] = h->pad[2] = 0;
    h->tgid = id >> 32;
    h->tid = (u32)id;
    h->fd = fd;
    h->at = bpf_ktime_get_ns();
    h->ret = ret;
}

/* The socket behind the current task's descriptor `fd`: task->files->fdt->fd[fd]->private_data. */
static __always_inline struct sock *sock_of(s64 fd)
{
    struct task_struct *task = (struct task_struct *)bpf_get_current_task();
    struct files_struct *files = 0;
    struct fdtable *fdt = 0;
    struct file **fds = 0;
    struct file *file = 0;
    struct socket *socket = 0;
    struct sock *sk = 0;
    unsigned int max_fds = 0;
    bpf_probe_read_kernel(&files, sizeof files, &task->files);
    if (!files)
        return 0;
    bpf_probe_read_kernel(&fdt, sizeof fdt, &files->fdt);
    if (!fdt)
        return 0;
    bpf_probe_read_kernel(&max_fds, sizeof max_fds, &fdt->max_fds);
    if (fd < 0 || fd >= max_fds)
        return 0;
    bpf_probe_read_kernel(&fds, sizeof fds, &fdt->fd);
    bpf_probe_read_kernel(&file, sizeof file, &fds[fd]);
    if (!file)
        return 0;
    bpf_probe_read_kernel(&socket, sizeof socket, &file->private_data);
    if (!socket)
        return 0;
    bpf_probe_read_kernel(&sk, sizeof sk, &socket->sk);
    return sk;
}

/* The registers a syscall was entered with: its arguments are still there at its exit, so
 * no program runs at entry. */
static __always_inline struct pt_regs *entry_regs(void)
{
    return bpf_task_pt_regs(bpf_get_current_task_btf());
}

/* accept/accept4 return the new descriptor, so an accept entered before the process was
 * traced (a server waiting for its first client) still counts; connect works on its first
 * argument, and a non-blocking one returns EINPROGRESS with the local port already bound. */
static __always_inline int exit_conn(struct sys_exit *ctx, u8 kind)
{
    u64 id = bpf_get_current_pid_tgid();
    if (!capture_of(id))
        return 0;
    s64 fd = ctx->ret;
    if (kind == EV_CONNECT) {
        if (ctx->ret < 0 && ctx->ret != -EINPROGRESS)
            return 0;
        fd = (s32)entry_regs()->di;
    } else if (ctx->ret < 0) {
        return 0;
    }
    struct sock *sk = sock_of(fd);
    if (!sk)
        return 0;
    u16 family = 0, protocol = 0;
    bpf_probe_read_kernel(&family, sizeof family, &sk->__sk_common.skc_family);
    bpf_probe_read_kernel(&protocol, sizeof protocol, &sk->sk_protocol);
    if ((family != AF_INET && family != AF_INET6) || protocol != IPPROTO_TCP)
        return 0;

    u64 key = conn_key(id, fd);
    u8 role = kind;
    bpf_map_update_elem(&conns, &key, &role, BPF_ANY);

    struct conn_event *e = reserve(sizeof *e);
    if (!e)
        return 0;
    fill_head(&e->h, kind, id, fd, ctx->ret);
    e->family = family;
    e->pad = 0;
    u16 remote_port = 0;
    bpf_probe_read_kernel(&e->local_port, sizeof e->local_port, &sk->__sk_common.skc_num);
    bpf_probe_read_kernel(&remote_port, sizeof remote_port, &sk->__sk_common.skc_dport);
    e->remote_port = __builtin_bswap16(remote_port);
    __builtin_memset(e->local_addr, 0, 32);
    if (family == AF_INET) {
        bpf_probe_read_kernel(e->local_addr, 4, &sk->__sk_common.skc_rcv_saddr);
        bpf_probe_read_kernel(e->remote_addr, 4, &sk->__sk_common.skc_daddr);
    } else {
        bpf_probe_read_kernel(e->local_addr, 16, &sk->__sk_common.skc_v6_rcv_saddr);
        bpf_probe_read_kernel(e->remote_addr, 16, &sk->__sk_common.skc_v6_daddr);
    }
    bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
    return 0;
}

/* A call on anything but a connection (a file, a pipe) costs two lookups. */
static __always_inline int exit_data(struct sys_exit *ctx, u8 kind, enum buffer buffer)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 *capture = capture_of(id);
    if (!capture || ctx->ret <= 0)
        return 0;
    struct pt_regs *regs = entry_regs();
    s64 fd = (s32)regs->di;
    u64 key = conn_key(id, fd);
    if (!bpf_map_lookup_elem(&conns, &key))
        return 0;
    u64 available = ctx->ret;
    void *buf = (void *)regs->si;
    if (buffer != PLAIN) {
        struct iovec iov = {0};
        struct iovec *first = (struct iovec *)buf;
        if (buffer == MSGHDR) {
            struct user_msghdr msg = {0};
            bpf_probe_read_user(&msg, sizeof msg, buf);
            first = msg.msg_iov;
        }
        bpf_probe_read_user(&iov, sizeof iov, first);
        buf = iov.iov_base;
        if (iov.iov_len < available)
            available = iov.iov_len;
    }
    u32 zero = 0;
    struct cpu_state *state = bpf_map_lookup_elem(&cpu_state, &zero);
    if (!state)
        return 0;
    struct data_event *e = &state->event;
    fill_head(&e->h, kind, id, fd, ctx->ret);
    u32 n = *capture;
    if (available < n)
        n = available;
    if (n >= MAX_CAPTURE)
        n = MAX_CAPTURE - 1;
    /* In assembly, so that clang cannot pass the unmasked copy to the helper. */
    asm volatile("%[n] &= %[mask]" : [n] "+r"(n) : [mask] "i"(MAX_CAPTURE - 1));
    e->pad = 0;
    if (bpf_probe_read_user(e->data, n, buf) != 0)
        n = 0;
    e->captured = n;
    u64 wake = BPF_RB_NO_WAKEUP;
    if (++state->unwoken >= WAKE_EVERY) {
        state->unwoken = 0;
        wake = BPF_RB_FORCE_WAKEUP;
    }
    if (bpf_ringbuf_output(&events, e, sizeof *e - MAX_CAPTURE + n, wake) != 0)
        count_lost();
    return 0;
}

#define CONN(name, kind)                                                                       \
    SEC("tracepoint/syscalls/sys_exit_" #name)                                                 \
    int exit_##name(struct sys_exit *ctx) { return exit_conn(ctx, kind); }

#define DATA(name, kind, buffer)                                                               \
    SEC("tracepoint/syscalls/sys_exit_" #name)                                                 \
    int exit_##name(struct sys_exit *ctx) { return exit_data(ctx, kind, buffer); }

CONN(accept, EV_ACCEPT)
CONN(accept4, EV_ACCEPT)
CONN(connect, EV_CONNECT)
DATA(read, EV_RECV, PLAIN)
DATA(recvfrom, EV_RECV, PLAIN)
DATA(readv, EV_RECV, IOVEC)
DATA(recvmsg, EV_RECV, MSGHDR)
DATA(write, EV_SEND, PLAIN)
DATA(sendto, EV_SEND, PLAIN)
DATA(writev, EV_SEND, IOVEC)
DATA(sendmsg, EV_SEND, MSGHDR)

/* A duplicate of a connection's descriptor (dup2, dup3, fcntl F_DUPFD) is the same
 * connection: Rust's try_clone and many servers read on one and write on the other. Plain
 * dup is left out: this kernel refuses to attach to its tracepoint (EPERM). */
static __always_inline int exit_duplicate(struct sys_exit *ctx, int fcntl)
{
    u64 id = bpf_get_current_pid_tgid();
    if (!capture_of(id) || ctx->ret < 0)
        return 0;
    struct pt_regs *regs = entry_regs();
    s64 fd = (s32)regs->di;
    u64 command = regs->si;
    if (fcntl && command != F_DUPFD && command != F_DUPFD_CLOEXEC)
        return 0;
    u64 key = conn_key(id, fd);
    u8 *role = bpf_map_lookup_elem(&conns, &key);
    if (!role)
        return 0;
    u8 copy = *role;
    u64 dup_key = conn_key(id, ctx->ret);
    bpf_map_update_elem(&conns, &dup_key, &copy, BPF_ANY);
    struct head *h = reserve(sizeof *h);
    if (!h)
        return 0;
    fill_head(h, EV_DUP, id, fd, ctx->ret);
    bpf_ringbuf_submit(h, BPF_RB_NO_WAKEUP);
    return 0;
}

#define DUP(name, fcntl)                                                                       \
    SEC("tracepoint/syscalls/sys_exit_" #name)                                                 \
    int exit_##name(struct sys_exit *ctx) { return exit_duplicate(ctx, fcntl); }

DUP(dup2, 0)
DUP(dup3, 0)
DUP(fcntl, 1)

SEC("tracepoint/syscalls/sys_enter_close")
int enter_close(struct sys_enter *ctx)
{
    u64 id = bpf_get_current_pid_tgid();
    if (!capture_of(id))
        return 0;
    u64 key = conn_key(id, ctx->args[0]);
    if (!bpf_map_lookup_elem(&conns, &key))
        return 0;
    bpf_map_delete_elem(&conns, &key);
    struct head *h = reserve(sizeof *h);
    if (!h)
        return 0;
    fill_head(h, EV_CLOSE, id, ctx->args[0], 0);
    bpf_ringbuf_submit(h, BPF_RB_NO_WAKEUP);
    return 0;
}

static __always_inline int process_event(u8 kind)
{
    u64 id = bpf_get_current_pid_tgid();
    struct head *h = reserve(sizeof *h);
    if (!h)
        return 0;
    fill_head(h, kind, id, -1, 0);
    bpf_ringbuf_submit(h, 0);
    return 0;
}

SEC("tracepoint/sched/sched_process_exec")
int process_exec(void *ctx) { return process_event(EV_EXEC); }

/* Only a whole process's end matters: its leader's exit. Its capture setting goes with it. */
SEC("tracepoint/sched/sched_process_exit")
int process_exit(void *ctx)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32;
    if ((u32)id != tgid)
        return 0;
    bpf_map_delete_elem(&traced, &tgid);
    return process_event(EV_EXIT);
}

struct fork {
    u32 parent;
    u32 child;
};

/* For each entry of `conns`: a connection of the parent is the child's as well. */
static long inherit_conn(void *map, u64 *key, u8 *role, struct fork *fork)
{
    if ((u32)(*key >> 32) == fork->parent) {
        u64 child_key = (u64)fork->child << 32 | (u32)*key;
        u8 copy = *role;
        bpf_map_update_elem(&conns, &child_key, &copy, BPF_ANY);
    }
    return 0;
}

/* A traced process's child is traced as well: a pre-fork server's workers (gunicorn, uWSGI)
 * accept the connections, and a forking server's child serves the one its parent accepted,
 * so the child inherits its parent's connections. A new thread is not a new process: only a child that leads its own
 * thread group counts. tp_btf, as the fork tracepoint's record names no thread group. */
SEC("tp_btf/sched_process_fork")
int process_fork(u64 *ctx)
{
    struct task_struct *parent = (struct task_struct *)ctx[0];
    struct task_struct *child = (struct task_struct *)ctx[1];
    u32 parent_tgid = 0, child_pid = 0, child_tgid = 0;
    bpf_probe_read_kernel(&parent_tgid, sizeof parent_tgid, &parent->tgid);
    u32 *capture = bpf_map_lookup_elem(&traced, &parent_tgid);
    if (!capture)
        return 0;
    bpf_probe_read_kernel(&child_pid, sizeof child_pid, &child->pid);
    bpf_probe_read_kernel(&child_tgid, sizeof child_tgid, &child->tgid);
    if (child_pid != child_tgid)
        return 0;
    u32 value = *capture;
    bpf_map_update_elem(&traced, &child_tgid, &value, BPF_ANY);
    struct fork fork = {.parent = parent_tgid, .child = child_tgid};
    bpf_for_each_map_elem(&conns, inherit_conn, &fork, 0);
    struct head *h = reserve(sizeof *h);
    if (!h)
        return 0;
    fill_head(h, EV_FORK, (u64)child_tgid << 32 | child_tgid, parent_tgid, 0);
    bpf_ringbuf_submit(h, 0);
    return 0;
}
