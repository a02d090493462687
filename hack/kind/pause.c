/* The pause process of every pod sandbox: waits for a signal, reaps children.
   Built static with gcc by hack/kind_node_image.py (image registry.k8s.io/pause:3.10). */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
static void on_term(int s) { (void)s; _exit(0); }
static void on_chld(int s) { (void)s; while (waitpid(-1, 0, WNOHANG) > 0) {} }
int main(void) {
  struct sigaction a = {0}, c = {0};
  a.sa_handler = on_term; sigaction(SIGINT, &a, 0); sigaction(SIGTERM, &a, 0);
  c.sa_handler = on_chld; c.sa_flags = SA_NOCLDSTOP; sigaction(SIGCHLD, &c, 0);
  for (;;) pause();
}
