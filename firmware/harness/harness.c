/*
 * simavr-pulse: run the pulse-board firmware on an emulated ATmega328P at 16 MHz, close its
 * sensor switch on a schedule (bounces included), and bridge its UART to a pseudo-terminal, so
 * the real pulse:// driver reads the real firmware (docs/firmware.md).
 *
 *   simavr-pulse [--hold-ms H] [--bounce-us U] [--boot-ms B] [--no-wait] [--run-ms MS] PULSE.ELF SCHEDULE
 *
 * SCHEDULE: comma-separated presses, times in board milliseconds since the board started:
 *   T          one press at T
 *   TbB        one press at T whose contacts bounce B times on closing and B times on opening
 *   T:E:N      N presses every E ms from T;  T:E:NbB  the same, each bouncing B times
 * A press pulls pin 2 (PD2, INT0) low, holds it H ms (default 5) and lets the pull-up take it
 * high again; each bounce is a high/low pair U microseconds apart (default 60 µs: a reed switch
 * bounces for about 1 ms in all).
 *
 * Output on stdout, one line each, flushed: "pty <path>" at once; "board started" when the
 * board comes out of reset; "presses <N> edges <F>" when the schedule is done (F counts every
 * falling edge sent, bounces included); "ms <board_ms>" when it exits.
 *
 * Like a USB Arduino, whose DTR line resets it when its port opens, the board starts when the
 * pty's other end is first opened (--no-wait: at once), so the version line is not written into
 * a port nobody reads; and, like its bootloader, it waits --boot-ms (default 300) before the
 * sketch runs: pyserial flushes the input right after it opens a port, and would eat the first
 * bytes of a board that answered at once. The emulation is held to real time (simavr alone runs faster than the
 * chip: board_ms would then race ahead of the host's clock, which the driver refuses as a line
 * no belt makes); if the host is too slow, the board runs slow, and its clock with it.
 * It runs until SIGTERM/SIGINT, or --run-ms of board time.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <sim_avr.h>
#include <sim_elf.h>
#include <avr_ioport.h>
#include <avr_uart.h>

#define F_CPU 16000000ULL
#define CYCLES_PER_US (F_CPU / 1000000ULL)
#define CYCLES_PER_MS (F_CPU / 1000ULL)
#define MAX_PRESSES 100000

typedef struct {
	uint64_t cycle;
	uint8_t level;  /* 0: pulled low (switch closed), 1: released */
	uint8_t falling_counts; /* a falling edge: counted in "edges" */
} edge_t;

static edge_t *edges;
static size_t n_edges, cap_edges;
static unsigned long n_presses;
static volatile sig_atomic_t stop_requested;
static int master_fd = -1;

static void on_signal(int sig) {
	(void)sig;
	stop_requested = 1;
}

static void die(const char *what) {
	fprintf(stderr, "simavr-pulse: %s\n", what);
	exit(2);
}

static void add_edge(uint64_t cycle, uint8_t level) {
	if (n_edges == cap_edges) {
		cap_edges = cap_edges ? cap_edges * 2 : 256;
		edges = realloc(edges, cap_edges * sizeof *edges);
		if (!edges)
			die("out of memory");
	}
	edges[n_edges].cycle = cycle;
	edges[n_edges].level = level;
	edges[n_edges].falling_counts = level == 0;
	n_edges++;
}

static void add_press(uint64_t at_ms, unsigned bounces, unsigned hold_ms, unsigned bounce_us) {
	uint64_t t = at_ms * CYCLES_PER_MS;
	uint64_t step = (uint64_t)bounce_us * CYCLES_PER_US;
	add_edge(t, 0);
	for (unsigned i = 0; i < bounces; i++) {
		add_edge(t + (2 * i + 1) * step, 1);
		add_edge(t + (2 * i + 2) * step, 0);
	}
	uint64_t r = t + (uint64_t)hold_ms * CYCLES_PER_MS;
	add_edge(r, 1);
	for (unsigned i = 0; i < bounces; i++) {
		add_edge(r + (2 * i + 1) * step, 0);
		add_edge(r + (2 * i + 2) * step, 1);
	}
	n_presses++;
}

static int by_cycle(const void *a, const void *b) {
	const edge_t *x = a, *y = b;
	return (x->cycle > y->cycle) - (x->cycle < y->cycle);
}

static unsigned long parse_number(const char **p, const char *spec) {
	char *end;
	errno = 0;
	unsigned long v = strtoul(*p, &end, 10);
	if (end == *p || errno) {
		fprintf(stderr, "simavr-pulse: bad schedule %s at \"%s\"\n", spec, *p);
		exit(2);
	}
	*p = end;
	return v;
}

static void parse_schedule(const char *spec, unsigned hold_ms, unsigned bounce_us) {
	const char *p = spec;
	while (*p) {
		unsigned long at = parse_number(&p, spec), every = 0, count = 1, bounces = 0;
		if (*p == ':') {
			p++;
			every = parse_number(&p, spec);
			if (*p != ':')
				die("a repeated press is T:EVERY:COUNT");
			p++;
			count = parse_number(&p, spec);
			if (every <= hold_ms)
				die("presses must be further apart than the hold time");
		}
		if (*p == 'b') {
			p++;
			bounces = parse_number(&p, spec);
			if ((2 * bounces + 1) * bounce_us >= hold_ms * 1000UL)
				die("the bounces must end within the hold time");
		}
		if (*p == ',')
			p++;
		else if (*p)
			die("schedule items are separated by commas");
		if (n_presses + count > MAX_PRESSES)
			die("too many presses");
		for (unsigned long i = 0; i < count; i++)
			add_press(at + i * every, (unsigned)bounces, hold_ms, bounce_us);
	}
	qsort(edges, n_edges, sizeof *edges, by_cycle);
}

/* Every byte the firmware's UART sends goes to the pty as it leaves the chip. */
static void on_uart_byte(struct avr_irq_t *irq, uint32_t value, void *param) {
	(void)irq;
	(void)param;
	uint8_t b = (uint8_t)value;
	for (;;) {
		ssize_t n = write(master_fd, &b, 1);
		if (n == 1 || (n < 0 && errno != EINTR && errno != EAGAIN))
			return; /* nobody reads (EIO): the byte is lost, like on an unplugged cable */
		if (n < 0 && errno == EAGAIN) {
			struct pollfd pfd = {master_fd, POLLOUT, 0};
			poll(&pfd, 1, 10);
		}
	}
}

/* simavr logs on stdout, which is ours for the lines above: its words go to stderr, warnings up. */
static void on_log(struct avr_t *avr, const int level, const char *format, va_list ap) {
	(void)avr;
	if (level <= LOG_WARNING)
		vfprintf(stderr, format, ap);
}

static double now_s(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* True while the pty's other end is open (the master reports POLLHUP while it is not). */
static int peer_open(void) {
	struct pollfd pfd = {master_fd, POLLIN, 0};
	if (poll(&pfd, 1, 0) < 0)
		return 0;
	if (pfd.revents & POLLIN) {
		char junk[256]; /* the board ignores what the host writes; drain it (and any echo) */
		ssize_t n = read(master_fd, junk, sizeof junk);
		(void)n;
	}
	return !(pfd.revents & POLLHUP);
}

static void open_pty(void) {
	master_fd = posix_openpt(O_RDWR | O_NOCTTY);
	if (master_fd < 0 || grantpt(master_fd) || unlockpt(master_fd))
		die("cannot open a pseudo-terminal");
	const char *slave = ptsname(master_fd);
	if (!slave)
		die("ptsname failed");
	/* Raw from the start, as a USB CDC port is: no echo, no "\r" to "\n". The settings stay
	 * with the pty after this descriptor closes. */
	int s = open(slave, O_RDWR | O_NOCTTY);
	if (s < 0)
		die("cannot open the pty's slave side");
	struct termios tio;
	if (tcgetattr(s, &tio) == 0) {
		cfmakeraw(&tio);
		cfsetispeed(&tio, B115200);
		cfsetospeed(&tio, B115200);
		tcsetattr(s, TCSANOW, &tio);
	}
	close(s);
	fcntl(master_fd, F_SETFL, fcntl(master_fd, F_GETFL) | O_NONBLOCK);
	printf("pty %s\n", slave);
	fflush(stdout);
}

int main(int argc, char **argv) {
	unsigned hold_ms = 5, bounce_us = 60, boot_ms = 300;
	unsigned long long run_ms = 0;
	int wait_for_peer = 1;
	int i = 1;
	for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
		if (!strcmp(argv[i], "--hold-ms") && i + 1 < argc)
			hold_ms = (unsigned)strtoul(argv[++i], NULL, 10);
		else if (!strcmp(argv[i], "--bounce-us") && i + 1 < argc)
			bounce_us = (unsigned)strtoul(argv[++i], NULL, 10);
		else if (!strcmp(argv[i], "--boot-ms") && i + 1 < argc)
			boot_ms = (unsigned)strtoul(argv[++i], NULL, 10);
		else if (!strcmp(argv[i], "--run-ms") && i + 1 < argc)
			run_ms = strtoull(argv[++i], NULL, 10);
		else if (!strcmp(argv[i], "--no-wait"))
			wait_for_peer = 0;
		else
			die("usage: simavr-pulse [--hold-ms H] [--bounce-us U] [--boot-ms B] [--no-wait] [--run-ms MS] PULSE.ELF SCHEDULE");
	}
	if (argc - i != 2)
		die("usage: simavr-pulse [--hold-ms H] [--bounce-us U] [--boot-ms B] [--no-wait] [--run-ms MS] PULSE.ELF SCHEDULE");
	if (hold_ms == 0 || bounce_us == 0)
		die("--hold-ms and --bounce-us must be above 0");
	parse_schedule(argv[i + 1], hold_ms, bounce_us);

	avr_global_logger_set(on_log);
	elf_firmware_t fw;
	memset(&fw, 0, sizeof fw);
	if (elf_read_firmware(argv[i], &fw) != 0)
		die("cannot read the firmware ELF");
	avr_t *avr = avr_make_mcu_by_name("atmega328p");
	if (!avr)
		die("simavr has no atmega328p");
	avr_init(avr);
	avr->log = LOG_WARNING;
	fw.frequency = F_CPU;
	avr_load_firmware(avr, &fw);
	avr->frequency = F_CPU;

	/* simavr's UART prints what it sends on our stdout unless told not to. */
	uint32_t flags = 0;
	avr_ioctl(avr, AVR_IOCTL_UART_GET_FLAGS('0'), &flags);
	flags &= ~AVR_UART_FLAG_STDIO;
	avr_ioctl(avr, AVR_IOCTL_UART_SET_FLAGS('0'), &flags);
	avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_OUTPUT), on_uart_byte, NULL);
	avr_irq_t *pin = avr_io_getirq(avr, AVR_IOCTL_IOPORT_GETIRQ('D'), 2);
	avr_raise_irq(pin, 1); /* the pull-up: an open switch reads high */

	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	open_pty();
	while (wait_for_peer && !stop_requested && !peer_open()) {
		struct timespec ts = {0, 2000000};
		nanosleep(&ts, NULL);
	}
	if (wait_for_peer && boot_ms) {
		struct timespec ts = {boot_ms / 1000, (long)(boot_ms % 1000) * 1000000L};
		nanosleep(&ts, NULL);
	}
	if (stop_requested)
		return 0;
	printf("board started\n");
	fflush(stdout);

	const double t0 = now_s();
	const uint64_t c0 = avr->cycle;
	size_t next = 0;
	unsigned long falling = 0;
	int reported = n_edges == 0;
	if (reported) {
		printf("presses 0 edges 0\n");
		fflush(stdout);
	}
	while (!stop_requested) {
		/* One board millisecond at a time, then catch up with (or wait for) the host's clock. */
		const uint64_t slice_end = avr->cycle + CYCLES_PER_MS;
		while (avr->cycle < slice_end) {
			while (next < n_edges && edges[next].cycle <= avr->cycle - c0) {
				falling += edges[next].falling_counts;
				avr_raise_irq(pin, edges[next].level);
				next++;
			}
			int state = avr_run(avr);
			if (state == cpu_Done || state == cpu_Crashed) {
				fprintf(stderr, "simavr-pulse: the firmware stopped (state %d)\n", state);
				return 1;
			}
		}
		if (!reported && next == n_edges) {
			printf("presses %lu edges %lu\n", n_presses, falling);
			fflush(stdout);
			reported = 1;
		}
		const uint64_t board_ms = (avr->cycle - c0) / CYCLES_PER_MS;
		if (run_ms && board_ms >= run_ms)
			break;
		const double ahead = (double)(avr->cycle - c0) / F_CPU - (now_s() - t0);
		if (ahead > 0.001) {
			struct timespec ts = {0, (long)(ahead * 1e9)};
			nanosleep(&ts, NULL);
		}
		if (board_ms % 20 == 0)
			peer_open(); /* drain what the host writes, so its writes never block */
	}
	printf("ms %llu\n", (unsigned long long)((avr->cycle - c0) / CYCLES_PER_MS));
	fflush(stdout);
	return 0;
}
