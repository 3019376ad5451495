/* SPDX-License-Identifier: Apache-2.0 */
/* fwup firmware archives (.fw): verification and metadata (fw_verify.h,
 * the part a device needs), packing (fw_pack.h) and the artifact store
 * (fw_store.h). */
#ifndef PINION_LIB_FW_H
#define PINION_LIB_FW_H

#include "fw_pack.h"
#include "fw_store.h"
#include "fw_verify.h"

#endif
