with assumptions as (
    select
        0.8 as idle_burn_l_per_h,  -- litres an idling engine burns per hour
        1.70 as fuel_price_per_l   -- price of a litre, in the account's currency
),

{{ vehicle_names() }},

idle as (
    select vehicle_id, sum(idle_s) / 3600 as idle_h
    from {{ ref('fleet_daily') }}
    group by grouping sets ((vehicle_id), ())
)

select
    coalesce(idle.vehicle_id, '(all)') as vehicle_id,
    case when idle.vehicle_id is null then 'whole fleet' else names.display_name end
        as display_name,
    round(idle.idle_h, 2) as idle_h,
    round(idle.idle_h * assumptions.idle_burn_l_per_h, 1) as idle_fuel_l,
    round(
        idle.idle_h * assumptions.idle_burn_l_per_h * assumptions.fuel_price_per_l, 2
    ) as idle_cost
from idle
cross join assumptions
left join names using (vehicle_id)
order by idle.vehicle_id is null, idle_cost desc, vehicle_id
