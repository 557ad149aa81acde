// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * trapless-io: what a Linux partition's /init does over its static virtio links, from
 * userspace, through the stock drivers' devices (docs/linux.md):
 *
 *   trapless-io console DEVICE LINES     writes LINES lines of mixed lengths to DEVICE (a tty,
 *                                        made raw) and checks each comes back byte-exact
 *   trapless-io net IFACE FRAMES         sends FRAMES Ethernet frames of mixed sizes (60 to
 *                                        1514 bytes) on IFACE, one at a time, and checks each
 *                                        comes back byte-exact
 *   trapless-io rtt IFACE COUNT SIZE     COUNT round trips of a SIZE-byte frame, each timed
 *                                        with the architected counter (cargo xtask bench)
 *   trapless-io bulk IFACE COUNT         COUNT full-size frames, eight in flight, timed from
 *                                        the first send to the last echo (cargo xtask bench)
 *
 * Each prints what it did on one line (the bench ones in `cargo xtask bench`'s format) and exits
 * 0, or says what went wrong and exits 1. Frames use the local experimental EtherType 0x88b5,
 * addressed to the interface itself, so the echo is taken as received traffic.
 *
 * Debian's cross compiler comes without a C library here: this program makes its own system
 * calls (arm64 Linux numbers) and is linked with nothing but libgcc.
 */

#include <stddef.h>
#include <stdint.h>

/* arm64 Linux system calls and the few ABI constants used. */
#define SYS_ioctl		29
#define SYS_openat		56
#define SYS_close		57
#define SYS_read		63
#define SYS_write		64
#define SYS_ppoll		73
#define SYS_exit_group		94
#define SYS_socket		198
#define SYS_bind		200
#define SYS_sendto		206
#define SYS_recvfrom		207

#define AT_FDCWD		-100
#define O_RDWR			02
#define O_NOCTTY		0400
#define EINTR			4
#define EAGAIN			11
#define POLLIN			1
#define AF_PACKET		17
#define SOCK_RAW		3
#define SIOCGIFINDEX		0x8933
#define SIOCGIFHWADDR		0x8927
#define TCGETS			0x5401
#define TCSETS			0x5402

#define ETHERTYPE		0x88b5
#define ETH_HEADER		14
#define MAX_FRAME		1514
#define MIN_FRAME		60
#define IN_FLIGHT		8
#define WAIT_SECONDS		5
#define MAX_SAMPLES		200000
#define PER_LINE		24

#define ARRAY_SIZE(array)	(sizeof(array) / sizeof((array)[0]))

struct timespec64 {
	int64_t tv_sec;
	int64_t tv_nsec;
};

struct pollfd {
	int fd;
	short events;
	short revents;
};

struct ifreq {
	char name[16];
	union {
		int index;
		struct {
			uint16_t family;
			uint8_t data[14];
		} hwaddr;
		uint8_t pad[24];
	};
};

struct sockaddr_ll {
	uint16_t family;
	uint16_t protocol;	/* network order */
	int32_t ifindex;
	uint16_t hatype;
	uint8_t pkttype;
	uint8_t halen;
	uint8_t addr[8];
};

struct termios {
	uint32_t iflag, oflag, cflag, lflag;
	uint8_t line;
	uint8_t cc[19];
};

/* termios bits (asm-generic/termbits.h) */
#define IGNBRK	0000001
#define BRKINT	0000002
#define PARMRK	0000010
#define ISTRIP	0000040
#define INLCR	0000100
#define IGNCR	0000200
#define ICRNL	0000400
#define IXON	0002000
#define OPOST	0000001
#define CSIZE	0000060
#define CS8	0000060
#define PARENB	0000400
#define ISIG	0000001
#define ICANON	0000002
#define ECHO	0000010
#define ECHONL	0000100
#define IEXTEN	0100000
#define VTIME	5
#define VMIN	6

static long syscall6(long number, long a, long b, long c, long d, long e, long f)
{
	register long x8 __asm__("x8") = number;
	register long x0 __asm__("x0") = a;
	register long x1 __asm__("x1") = b;
	register long x2 __asm__("x2") = c;
	register long x3 __asm__("x3") = d;
	register long x4 __asm__("x4") = e;
	register long x5 __asm__("x5") = f;

	__asm__ volatile("svc #0"
			 : "+r"(x0)
			 : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4), "r"(x5)
			 : "memory");
	return x0;
}

#define syscall3(n, a, b, c) syscall6(n, (long)(a), (long)(b), (long)(c), 0, 0, 0)

/* What the compiler may call for copies and clears. */
void *memcpy(void *to, const void *from, size_t count)
{
	uint8_t *d = to;
	const uint8_t *s = from;

	while (count--)
		*d++ = *s++;
	return to;
}

void *memset(void *to, int value, size_t count)
{
	uint8_t *d = to;

	while (count--)
		*d++ = (uint8_t)value;
	return to;
}

int memcmp(const void *left, const void *right, size_t count)
{
	const uint8_t *a = left, *b = right;

	for (; count; count--, a++, b++)
		if (*a != *b)
			return *a - *b;
	return 0;
}

static size_t length(const char *text)
{
	size_t count = 0;

	while (text[count])
		count++;
	return count;
}

static int same(const char *a, const char *b)
{
	return length(a) == length(b) && !memcmp(a, b, length(a));
}

static __attribute__((noreturn)) void leave(int status)
{
	for (;;)
		syscall3(SYS_exit_group, status, 0, 0);
}

/* A line of output, built up and written at once. */
static char line[512];
static size_t line_length;

static void add(const char *text)
{
	while (*text && line_length < sizeof(line) - 1)
		line[line_length++] = *text++;
}

static void add_number(uint64_t value)
{
	char digits[24];
	int count = 0;

	do {
		digits[count++] = (char)('0' + value % 10);
		value /= 10;
	} while (value);
	while (count && line_length < sizeof(line) - 1)
		line[line_length++] = digits[--count];
}

static void say(void)
{
	line[line_length++] = '\n';
	syscall3(SYS_write, 1, line, line_length);
	line_length = 0;
}

static __attribute__((noreturn)) void fail(const char *what, long error)
{
	add(what);
	if (error) {
		add(" (error ");
		add_number((uint64_t)-error);
		add(")");
	}
	say();
	leave(1);
}

static uint64_t number(const char *text)
{
	uint64_t value = 0;

	if (!*text)
		fail("trapless-io: a count is empty", 0);
	for (; *text; text++) {
		if (*text < '0' || *text > '9')
			fail("trapless-io: a count is not a number", 0);
		value = value * 10 + (uint64_t)(*text - '0');
	}
	return value;
}

static uint64_t counter(void)
{
	uint64_t value;

	__asm__ volatile("isb; mrs %0, cntvct_el0" : "=r"(value));
	return value;
}

static uint64_t frequency(void)
{
	uint64_t value;

	__asm__ volatile("mrs %0, cntfrq_el0" : "=r"(value));
	return value;
}

/* Waits until @fd can be read, for at most WAIT_SECONDS; 0 if it can. */
static long wait_readable(int fd)
{
	struct pollfd poll = { .fd = fd, .events = POLLIN };
	struct timespec64 timeout = { .tv_sec = WAIT_SECONDS };
	long ready;

	do
		ready = syscall6(SYS_ppoll, (long)&poll, 1, (long)&timeout, 0, 0, 0);
	while (ready == -EINTR);
	return ready == 1 ? 0 : ready == 0 ? -EAGAIN : ready;
}

static void write_all(int fd, const uint8_t *data, size_t count)
{
	while (count) {
		long done = syscall3(SYS_write, fd, data, count);

		if (done == -EINTR)
			continue;
		if (done <= 0)
			fail("trapless-io: write failed", done);
		data += done;
		count -= (size_t)done;
	}
}

/* Console: lines out, the same bytes back. */
static int console(const char *device, uint64_t lines)
{
	static uint8_t out[256], in[256];
	struct termios mode;
	uint64_t bytes = 0, index;
	long fd, error;

	fd = syscall3(SYS_openat, AT_FDCWD, device, O_RDWR | O_NOCTTY);
	if (fd < 0)
		fail("console: cannot open the device", fd);
	/* Raw: every byte as it is, both ways, and nothing echoed by the tty itself. */
	error = syscall3(SYS_ioctl, fd, TCGETS, &mode);
	if (error)
		fail("console: not a tty", error);
	mode.iflag &= ~(uint32_t)(IGNBRK | BRKINT | PARMRK | ISTRIP | INLCR | IGNCR | ICRNL | IXON);
	mode.oflag &= ~(uint32_t)OPOST;
	mode.lflag &= ~(uint32_t)(ECHO | ECHONL | ICANON | ISIG | IEXTEN);
	mode.cflag = (mode.cflag & ~(uint32_t)(CSIZE | PARENB)) | CS8;
	mode.cc[VMIN] = 1;
	mode.cc[VTIME] = 0;
	error = syscall3(SYS_ioctl, fd, TCSETS, &mode);
	if (error)
		fail("console: cannot make the tty raw", error);
	for (index = 0; index < lines; index++) {
		size_t count = 0, have = 0, size = 8 + (index * 37) % 180, at;

		/* "line <n>: " and printable bytes of every kind, then a newline. */
		line_length = 0;
		add("line ");
		add_number(index);
		add(": ");
		for (at = 0; at < line_length; at++)
			out[count++] = (uint8_t)line[at];
		line_length = 0;
		while (count < size)
			out[count] = (uint8_t)(' ' + (index * 7 + count) % 95), count++;
		out[count++] = '\n';
		write_all((int)fd, out, count);
		while (have < count) {
			long got;

			error = wait_readable((int)fd);
			if (error) {
				add("console: line ");
				add_number(index);
				add(": no echo within the time limit");
				fail("", error);
			}
			got = syscall3(SYS_read, fd, in + have, count - have);
			if (got < 0 && got != -EINTR && got != -EAGAIN)
				fail("console: read failed", got);
			if (got > 0)
				have += (size_t)got;
		}
		if (memcmp(in, out, count)) {
			add("console: line ");
			add_number(index);
			fail(" came back different", 0);
		}
		bytes += count;
	}
	syscall3(SYS_close, fd, 0, 0);
	add("console: ");
	add_number(lines);
	add(" lines, ");
	add_number(bytes);
	add(" bytes, echoed byte-exact");
	say();
	return 0;
}

/* A raw socket on @interface for our EtherType, and the interface's address. */
static long open_link(const char *interface, uint8_t address[6])
{
	struct ifreq request = { 0 };
	struct sockaddr_ll where = { 0 };
	long fd, error;

	if (length(interface) >= sizeof(request.name))
		fail("net: interface name too long", 0);
	memcpy(request.name, interface, length(interface));
	fd = syscall3(SYS_socket, AF_PACKET, SOCK_RAW, __builtin_bswap16(ETHERTYPE));
	if (fd < 0)
		fail("net: cannot open a packet socket", fd);
	error = syscall3(SYS_ioctl, fd, SIOCGIFHWADDR, &request);
	if (error)
		fail("net: no such interface", error);
	memcpy(address, request.hwaddr.data, 6);
	error = syscall3(SYS_ioctl, fd, SIOCGIFINDEX, &request);
	if (error)
		fail("net: no interface index", error);
	where.family = AF_PACKET;
	where.protocol = __builtin_bswap16(ETHERTYPE);
	where.ifindex = request.index;
	error = syscall3(SYS_bind, fd, &where, sizeof(where));
	if (error)
		fail("net: cannot bind to the interface", error);
	return fd;
}

/* Frame @index of @size bytes: to and from @address, our EtherType, its number, a pattern. */
static void make_frame(uint8_t *frame, const uint8_t address[6], uint64_t index, size_t size)
{
	size_t at;

	memcpy(frame, address, 6);
	memcpy(frame + 6, address, 6);
	frame[12] = ETHERTYPE >> 8;
	frame[13] = ETHERTYPE & 0xff;
	for (at = 0; at < 4; at++)
		frame[ETH_HEADER + at] = (uint8_t)(index >> (24 - 8 * at));
	for (at = ETH_HEADER + 4; at < size; at++)
		frame[at] = (uint8_t)(index * 31 + at);
}

static void send_frame(long fd, const uint8_t *frame, size_t size)
{
	long sent;

	do
		sent = syscall6(SYS_sendto, fd, (long)frame, (long)size, 0, 0, 0);
	while (sent == -EINTR || sent == -EAGAIN);
	if (sent != (long)size)
		fail("net: send failed", sent < 0 ? sent : 0);
}

/* Receives one frame into @frame (at least MAX_FRAME bytes); returns its size. */
static size_t receive_frame(long fd, uint8_t *frame, uint64_t index)
{
	for (;;) {
		long got, error = wait_readable((int)fd);

		if (error) {
			add("net: frame ");
			add_number(index);
			add(": no echo within the time limit");
			fail("", error);
		}
		got = syscall6(SYS_recvfrom, fd, (long)frame, MAX_FRAME + 64, 0, 0, 0);
		if (got >= 0)
			return (size_t)got;
		if (got != -EINTR && got != -EAGAIN)
			fail("net: receive failed", got);
	}
}

static void check_echo(const uint8_t *sent, size_t size, const uint8_t *got, size_t got_size,
		       uint64_t index)
{
	if (got_size == size && !memcmp(sent, got, size))
		return;
	add("net: frame ");
	add_number(index);
	add(" of ");
	add_number(size);
	add(" bytes came back as ");
	add_number(got_size);
	fail(" bytes, or different", 0);
}

static const size_t sizes[] = { 60, 1514, 64, 1000, 128, 1500, 61, 577, 256, 1200, 1513, 90 };

static int net(const char *interface, uint64_t frames)
{
	static uint8_t out[MAX_FRAME], in[MAX_FRAME + 64];
	uint8_t address[6];
	uint64_t index, bytes = 0;
	long fd = open_link(interface, address);

	for (index = 0; index < frames; index++) {
		size_t size = sizes[index % ARRAY_SIZE(sizes)];

		make_frame(out, address, index, size);
		send_frame(fd, out, size);
		check_echo(out, size, in, receive_frame(fd, in, index), index);
		bytes += size;
	}
	add("net: ");
	add_number(frames);
	add(" frames of ");
	add_number(MIN_FRAME);
	add(" to ");
	add_number(MAX_FRAME);
	add(" bytes, ");
	add_number(bytes);
	add(" bytes, echoed byte-exact");
	say();
	return 0;
}

static void bench_header(const char *workload, uint64_t count, uint64_t size)
{
	add("bench: workload=");
	add(workload);
	add(" iterations=");
	add_number(count);
	add(" size=");
	add_number(size);
	add(" frequency=");
	add_number(frequency());
	say();
}

static int rtt(const char *interface, uint64_t count, uint64_t size)
{
	static uint8_t out[MAX_FRAME], in[MAX_FRAME + 64];
	static uint64_t samples[MAX_SAMPLES];
	uint8_t address[6];
	uint64_t index;
	long fd;

	if (count > MAX_SAMPLES || size < MIN_FRAME || size > MAX_FRAME)
		fail("bench: failed: at most 200000 round trips of 60 to 1514 bytes", 0);
	fd = open_link(interface, address);
	for (index = 0; index < count; index++) {
		size_t got;
		uint64_t start;

		make_frame(out, address, index, size);
		start = counter();
		send_frame(fd, out, size);
		got = receive_frame(fd, in, index);
		samples[index] = counter() - start;
		check_echo(out, size, in, got, index);
	}
	bench_header("rtt", count, size);
	for (index = 0; index < count; index++) {
		if (index % PER_LINE == 0)
			add("bench: samples");
		add(" ");
		add_number(samples[index]);
		if (index % PER_LINE == PER_LINE - 1 || index == count - 1)
			say();
	}
	return 0;
}

static int bulk(const char *interface, uint64_t count)
{
	static uint8_t out[MAX_FRAME], in[MAX_FRAME + 64];
	uint8_t address[6];
	uint64_t sent = 0, echoed = 0, start, ticks;
	long fd = open_link(interface, address);

	start = counter();
	while (echoed < count) {
		while (sent < count && sent - echoed < IN_FLIGHT) {
			make_frame(out, address, sent, MAX_FRAME);
			send_frame(fd, out, MAX_FRAME);
			sent++;
		}
		make_frame(out, address, echoed, MAX_FRAME);
		check_echo(out, MAX_FRAME, in, receive_frame(fd, in, echoed), echoed);
		echoed++;
	}
	ticks = counter() - start;
	bench_header("bulk", count, MAX_FRAME);
	add("bench: bulk frames=");
	add_number(count);
	add(" bytes=");
	add_number(count * MAX_FRAME);
	add(" ticks=");
	add_number(ticks);
	say();
	return 0;
}

static int run(int argc, char **argv)
{
	if (argc == 4 && same(argv[1], "console"))
		return console(argv[2], number(argv[3]));
	if (argc == 4 && same(argv[1], "net"))
		return net(argv[2], number(argv[3]));
	if (argc == 5 && same(argv[1], "rtt"))
		return rtt(argv[2], number(argv[3]), number(argv[4]));
	if (argc == 4 && same(argv[1], "bulk"))
		return bulk(argv[2], number(argv[3]));
	fail("usage: trapless-io console DEVICE LINES | net IFACE FRAMES | rtt IFACE COUNT SIZE"
	     " | bulk IFACE COUNT", 0);
}

/* The entry: the kernel leaves argc, then argv, at the stack pointer. */
__attribute__((used)) static void start(long *stack)
{
	leave(run((int)stack[0], (char **)(stack + 1)));
}

__asm__(".text\n"
	".global _start\n"
	"_start:\n"
	"	mov x29, #0\n"
	"	mov x30, #0\n"
	"	mov x0, sp\n"
	"	b start\n");
