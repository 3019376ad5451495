/* SPDX-License-Identifier: Apache-2.0 */
/* libpinion-device: what a device needs to take a firmware update from
 * Pinion (README "Device library").  Signed update manifests and their rules
 * (manifest.h), fwup archive verification (fw_verify.h) and fwup key files
 * (fwkey.h); errors are one sentence in a struct pn_err (err.h).  Call
 * sodium_init() before anything else.  Link with
 * `pkg-config --cflags --libs pinion-device`. */
/* The guard names the installed header (<pinion-device/pinion-device.h>), not
 * its place in this tree as every other guard does (PINION_<DIR>_<FILE>_H). */
#ifndef PINION_DEVICE_H
#define PINION_DEVICE_H

#include "err.h"
#include "fw_verify.h"
#include "fwkey.h"
#include "manifest.h"

#endif
