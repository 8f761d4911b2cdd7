/* embed.c: embeds libgodwit: boots a kernel, reports events, pauses, resumes, and waits.
 * Build: cc embed.c -lgodwit (or with the build tree: see examples/CMakeLists.txt).
 * Usage: embed KERNEL [INITRD [CMDLINE]] */
#include <godwit/godwit.h>
#include <stdio.h>
#include <unistd.h>

static const char *event_name(enum godwit_event event)
{
    switch (event) {
    case GODWIT_EVENT_STARTED: return "started";
    case GODWIT_EVENT_PAUSED: return "paused";
    case GODWIT_EVENT_RESUMED: return "resumed";
    case GODWIT_EVENT_POWERED_OFF: return "powered off";
    case GODWIT_EVENT_ENDED: return "ended";
    case GODWIT_EVENT_ERROR: return "error";
    case GODWIT_EVENT_AGENT_FOUND: return "agent found";
    case GODWIT_EVENT_AGENT_LOST: return "agent lost";
    }
    return "?";
}

static void on_event(struct godwit_vm *vm, enum godwit_event event, void *opaque)
{
    (void)vm;
    (void)opaque;
    fprintf(stderr, "embed: event: %s\n", event_name(event));
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s KERNEL [INITRD [CMDLINE]]\n", argv[0]);
        return 2;
    }
    struct godwit_config config = {
        .kernel = argv[1],
        .initrd = argc > 2 ? argv[2] : NULL,
        .cmdline = argc > 3 ? argv[3] : NULL,
        .memory_mib = 256,
        .cpus = 1,
        .console_in_fd = -1,            /* no keyboard */
        .console_out_fd = STDOUT_FILENO, /* the guest's serial output */
    };
    struct godwit_vm *vm = godwit_create(&config);
    if (!vm)
        return 1;
    godwit_set_event_callback(vm, on_event, NULL);
    if (godwit_start(vm) < 0) {
        godwit_destroy(vm);
        return 1;
    }
    /* Once the vCPUs run, show that pause and resume work from the library. */
    while (godwit_get_state(vm) == GODWIT_STATE_CREATED)
        usleep(10000);
    if (godwit_pause(vm) == 0) {
        fprintf(stderr, "embed: state: %s\n", godwit_state_name(godwit_get_state(vm)));
        godwit_resume(vm);
    }
    int status = godwit_wait(vm);
    fprintf(stderr, "embed: exit status %d\n", status);
    godwit_destroy(vm);
    return status;
}
