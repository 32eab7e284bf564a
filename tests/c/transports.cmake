# transports.cmake - unit tests of the engine's byte layers: the WebSocket
# layer (core/src/ws.c) and the HTTP CONNECT tunnel with its head parser
# (core/src/proxy.c). Included from tests/c/CMakeLists.txt; needs
# OpenSSL::Crypto (find_package(OpenSSL) at the top level). The layers are
# compiled straight into each test, with the engine's allocator (alloc.c)
# so the tests can make allocations fail.
get_filename_component(SBUS_TR_ROOT "${CMAKE_CURRENT_LIST_DIR}/../.." ABSOLUTE)
set(SBUS_TR_SOURCES
  ${SBUS_TR_ROOT}/core/src/ws.c
  ${SBUS_TR_ROOT}/core/src/proxy.c
  ${SBUS_TR_ROOT}/core/src/alloc.c)

foreach(t ws proxy)
  add_executable(test_${t} ${CMAKE_CURRENT_LIST_DIR}/test_${t}.c ${SBUS_TR_SOURCES})
  target_include_directories(test_${t} PRIVATE
    ${SBUS_TR_ROOT}/core/include ${SBUS_TR_ROOT}/core/src)
  target_link_libraries(test_${t} PRIVATE OpenSSL::Crypto)
  add_test(NAME transport_${t} COMMAND test_${t})
endforeach()

# Through a real proxy: Debian's tinyproxy on free loopback ports, driven by
# proxy_driver (a tiny host owning the socket). Registered only where
# tinyproxy is installed; the script installs it when run by hand.
add_executable(proxy_driver ${CMAKE_CURRENT_LIST_DIR}/proxy_driver.c
  ${SBUS_TR_ROOT}/core/src/proxy.c ${SBUS_TR_ROOT}/core/src/alloc.c)
target_include_directories(proxy_driver PRIVATE
  ${SBUS_TR_ROOT}/core/include ${SBUS_TR_ROOT}/core/src)
target_link_libraries(proxy_driver PRIVATE OpenSSL::Crypto)
find_program(SBUS_TINYPROXY tinyproxy)
if(SBUS_TINYPROXY)
  add_test(NAME transport_tinyproxy
    COMMAND sh ${CMAKE_CURRENT_LIST_DIR}/proxy_tinyproxy.sh $<TARGET_FILE:proxy_driver>)
endif()
