# SPDX-License-Identifier: Apache-2.0
# Install rules beyond the three programs' own, and Debian packages:
#   cmake --build build && (cd build && cpack -G DEB)
# makes one package per component, because each runs on a different host
# with different dependencies: the broker host needs the plugin (and
# mosquitto, not libmosquitto), the release host piniond, an operator's
# machine the CLI.  Depends are computed from the shared libraries each
# binary links (dpkg-shlibdeps), so a library added later is picked up.

set(PINION_PKG_CLI pinion-cli)
set(PINION_PKG_PINIOND piniond)
set(PINION_PKG_PLUGIN pinion-mosquitto-plugin)

# piniond's systemd unit, its configuration (a conffile: dpkg keeps the
# operator's edits), and the plugin's mosquitto.conf snippet.  With the
# prefix /usr (the default) the configuration goes to /etc/pinion.
configure_file(${CMAKE_SOURCE_DIR}/packaging/piniond.service.in
               ${CMAKE_BINARY_DIR}/packaging/piniond.service @ONLY)
install(FILES ${CMAKE_BINARY_DIR}/packaging/piniond.service
        DESTINATION lib/systemd/system COMPONENT piniond)
install(FILES ${CMAKE_SOURCE_DIR}/packaging/piniond.conf
        DESTINATION ${CMAKE_INSTALL_FULL_SYSCONFDIR}/pinion COMPONENT piniond)
install(FILES ${CMAKE_SOURCE_DIR}/examples/mosquitto.conf
        DESTINATION ${CMAKE_INSTALL_DATADIR}/pinion RENAME mosquitto-pinion.conf
        COMPONENT plugin)
foreach(comp cli piniond plugin)
  string(TOUPPER ${comp} COMP)
  install(FILES ${CMAKE_SOURCE_DIR}/README.md
          DESTINATION ${CMAKE_INSTALL_DATADIR}/doc/${PINION_PKG_${COMP}} COMPONENT ${comp})
  install(FILES ${CMAKE_SOURCE_DIR}/LICENSE
          DESTINATION ${CMAKE_INSTALL_DATADIR}/doc/${PINION_PKG_${COMP}} RENAME copyright
          COMPONENT ${comp})
endforeach()

set(CPACK_PACKAGE_NAME pinion)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_VENDOR "Pinion")
set(CPACK_PACKAGE_CONTACT "Pinion maintainers <pinion@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
    "device PKI and firmware releases for Mosquitto")
set(CPACK_RESOURCE_FILE_LICENSE ${CMAKE_SOURCE_DIR}/LICENSE)
# The paths in the unit are the configured ones: package what was configured.
set(CPACK_PACKAGING_INSTALL_PREFIX ${CMAKE_INSTALL_PREFIX})
set(CPACK_STRIP_FILES ON)
set(CPACK_COMPONENTS_ALL cli piniond plugin)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)

set(CPACK_DEBIAN_CLI_PACKAGE_NAME ${PINION_PKG_CLI})
set(CPACK_COMPONENT_CLI_DESCRIPTION
    "Pinion's operator CLI\n pinion: Device CAs, device certificates, firmware signing and upload,\n deployments, in Pinion's PostgreSQL database.")

set(CPACK_DEBIAN_PINIOND_PACKAGE_NAME ${PINION_PKG_PINIOND})
set(CPACK_DEBIAN_PINIOND_PACKAGE_DEPENDS "adduser")
set(CPACK_COMPONENT_PINIOND_DESCRIPTION
    "Pinion's firmware release service\n piniond rolls firmware out to devices over MQTT: signed update manifests,\n firmware chunks, status reports.  Runs as the system user pinion under\n systemd (piniond.service).")
file(WRITE ${CMAKE_BINARY_DIR}/packaging/conffiles
     "${CMAKE_INSTALL_FULL_SYSCONFDIR}/pinion/piniond.conf\n")
set(CPACK_DEBIAN_PINIOND_PACKAGE_CONTROL_EXTRA
    ${CMAKE_BINARY_DIR}/packaging/conffiles
    ${CMAKE_SOURCE_DIR}/packaging/debian/piniond/postinst
    ${CMAKE_SOURCE_DIR}/packaging/debian/piniond/prerm
    ${CMAKE_SOURCE_DIR}/packaging/debian/piniond/postrm)
# Maintainer scripts installed 0755 whatever their mode in the checkout.
set(CPACK_DEBIAN_PINIOND_PACKAGE_CONTROL_STRICT_PERMISSION ON)

set(CPACK_DEBIAN_PLUGIN_PACKAGE_NAME ${PINION_PKG_PLUGIN})
# Mosquitto loads the plugin and provides the symbols it calls (they are
# not in any library dpkg-shlibdeps could find); 2.0 is the plugin API v5.
set(CPACK_DEBIAN_PLUGIN_PACKAGE_DEPENDS "mosquitto (>= 2.0)")
set(CPACK_COMPONENT_PLUGIN_DESCRIPTION
    "Pinion's Mosquitto plugin\n Admits devices by X.509 client certificates registered in Pinion's\n PostgreSQL database, pins them, and confines each to its own topics.")
set(CPACK_DEBIAN_PLUGIN_PACKAGE_CONTROL_EXTRA
    ${CMAKE_SOURCE_DIR}/packaging/debian/plugin/postinst
    ${CMAKE_SOURCE_DIR}/packaging/debian/plugin/prerm
    ${CMAKE_SOURCE_DIR}/packaging/debian/plugin/postrm)
set(CPACK_DEBIAN_PLUGIN_PACKAGE_CONTROL_STRICT_PERMISSION ON)

include(CPack)
