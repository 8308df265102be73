/*
 * The one version string of leakshim. `leakshim --version` prints it, the shim's JSON reports
 * carry it, the man page's header shows it, and the Makefile reads VERSION from this line
 * (`make version` prints it): change it here and nowhere else.
 */
#ifndef LS_VERSION_H
#define LS_VERSION_H

#define LEAKSHIM_VERSION "0.1.0"

#endif
